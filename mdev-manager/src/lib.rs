//! vgpu mdev manager.
