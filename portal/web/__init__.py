"""Server-rendered pages (one package per blueprint)."""
