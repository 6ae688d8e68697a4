"""The shipped demo: a procedural, seeded dataset of printed shapes and symbols."""
