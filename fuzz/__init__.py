"""Coverage-guided fuzzing of the code that takes bytes from outside and of the C extensions (fuzz/README.md)."""
