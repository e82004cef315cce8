//! Server assembly (under construction).
