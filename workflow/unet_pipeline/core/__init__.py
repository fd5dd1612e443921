"""Plumbing every stage shares: errors, atomic writes, checksums, progress, rule logging, figures, allocator."""
