"""Sub-commands of ``abaw-affect``; each module defines ``add_arguments(parser)`` and
``run(args) -> int`` and is imported only when its command is chosen."""
