//! Configuration (under construction).
