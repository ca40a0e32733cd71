"""A user package with a custom recorder term, referenced from config only."""
