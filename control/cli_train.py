"""deeplens-ctl verbs of this group (see control/cli.py)."""

COMMANDS = []
