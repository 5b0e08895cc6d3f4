//! `adoptd-applet`: the window comes with the bus layer; for now the model
//! alone is built and tested.

fn main() {}
