"""The media path: sources -> one encoder set -> a list of outputs."""
