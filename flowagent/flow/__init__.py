"""Flow files in, an immutable compiled flow out: loader (positions), validation and its
checks, templates and expressions, the compiler. Nothing here does I/O beyond reading files."""
