"""Dataset converters: `python -m data_tools.<name> --help` (run from the repository root)."""
