"""Login-service templates, shipped inside the package as ``tokend.service_templates``.

Placeholders (str.format): {tokend} the absolute path of the installed tokend, {config} the config file,
{log_dir} tokend's log folder, {label} the service's name. `tokend service install` fills them in, escaped for
each file's syntax.
"""
