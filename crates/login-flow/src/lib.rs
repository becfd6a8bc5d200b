//! The AllThingsTalk `/login` protocol (being written).
