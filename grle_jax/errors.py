"""The one error type users see: a field name and what is wrong with its value."""


class ConfigError(ValueError):
    """Bad input. ``str(err)`` is ``"<field>: <why>"``; the CLI prints ``error: <field>: <why>``."""

    def __init__(self, field: str, why: str):
        self.field = field
        self.why = why
        super().__init__(f"{field}: {why}")
