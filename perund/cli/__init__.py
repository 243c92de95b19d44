"""Command-line entry points: `perund` (node tools and the demo)."""
