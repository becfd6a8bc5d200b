//! A faithful fake of the AllThingsTalk cloud (being written).
