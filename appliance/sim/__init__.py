"""Device simulators shipped with the package (as gpiozero ships MockFactory).

The sim profile and the tests both use them: the daemon runs its real code and
only the device at the operating-system boundary is simulated.
"""
