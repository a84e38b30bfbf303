//! The protections, each an RAII unit: a slot, a reservation or a registration is a value
//! that releases what it holds when dropped, so no exit path of a request can leak one.

pub mod bandwidth;
pub mod budget;
pub mod in_flight;
pub mod rate;
pub mod slots;
