//! adoptd's D-Bus contract.
