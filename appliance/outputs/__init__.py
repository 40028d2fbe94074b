"""Outputs fed by the one encoder set: the recorder and the network outputs.

Each implements media.packets.Output: `packet()` only queues; an output that breaks
marks itself dead and reports, and the others go on.
"""
