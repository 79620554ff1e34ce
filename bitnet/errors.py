"""The package's exception: one line that says what is wrong and what to do."""


class BitnetError(Exception):
    """An error from the engine or the package, with a message fit to show a user as is."""


class ContextOverflow(BitnetError):
    """A prompt that leaves no room in the context for a generated token."""

    def __init__(self, message: str, n_prompt_tokens: int, n_ctx: int):
        super().__init__(message)
        self.n_prompt_tokens, self.n_ctx = n_prompt_tokens, n_ctx
