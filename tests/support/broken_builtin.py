"""An implementation that cannot be imported, as one whose library is missing."""

raise ImportError("libfoo.so.3: cannot open shared object file")
