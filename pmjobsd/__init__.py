"""pmjobsd: the background job daemon of Secure Password Manager."""

__version__ = "0.1.0"
