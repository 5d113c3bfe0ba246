//! TODO(owner: see module docs)
