"""deeplens-kit studio: a browser page over a project folder for the whole round (docs/studio.md)."""
