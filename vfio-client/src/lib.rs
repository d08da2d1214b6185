//! Userspace VFIO client for vgpu instances.
