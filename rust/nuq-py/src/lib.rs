//! Python binding (filled by its own change)
