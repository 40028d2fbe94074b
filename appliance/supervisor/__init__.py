"""The supervisor: a pure state machine and the asyncio service around it."""
