"""A module the workers import by reference (it is on the caller's sys.path, as
tests/py is under pytest): a user exception class and a function raising it."""


class CustomError(Exception):
    """A user exception with an extra attribute that must survive the trip."""

    def __init__(self, message, code):
        super().__init__(message, code)
        self.message = message
        self.code = code

    def __str__(self):
        return "%s (code %d)" % (self.message, self.code)


def raise_custom(message, code):
    raise CustomError(message, code)  # BT-RAISE-CUSTOM
