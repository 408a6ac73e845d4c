//! Discovery sources: they watch something outside (Kubernetes pods) and send the owner
//! of the topology the complete set of backends they see. They never touch pools or
//! sessions.

pub mod kubernetes;
