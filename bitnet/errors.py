"""The package's exception: one line that says what is wrong and what to do."""


class BitnetError(Exception):
    """An error from the engine or the package, with a message fit to show a user as is."""
