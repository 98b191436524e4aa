"""Unit tier: pure modules and codecs, one component at a time, no node processes."""
