"""The appliance's exceptions.

Each also inherits the built-in category it belongs to (as gpiozero does), so a
caller that knows nothing of ours can still catch ValueError or OSError.
"""


class ApplianceError(Exception):
    """Base of every error the appliance raises on purpose."""


class ConfigError(ApplianceError, ValueError):
    """A configuration file is unreadable or invalid.

    `problems` lists every problem found, each a one-line message naming the
    file and the key, so that all of them can be fixed in one go.
    """

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ProfileError(ApplianceError, LookupError):
    """No hardware profile by that name, or the profile file is broken."""


class ControlError(ApplianceError, ConnectionError):
    """The daemon's control socket cannot be reached or answered with an error."""


class ComponentError(ApplianceError, RuntimeError):
    """A component failed to start or stop."""


class AlreadyRunning(ControlError):
    """Another appliance daemon already answers on the control socket."""
