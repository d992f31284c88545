"""In-process tests, a file per module of tokend/: milliseconds each, no wheel, no servers, no processes."""
