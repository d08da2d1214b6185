//! Vulkan instance, device listing and selection (`--list-devices`, `--device`).

use std::ffi::CStr;
use std::fmt;

use ash::vk;

use crate::Error;

/// What `--list-devices` shows about one physical device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Index in the Vulkan loader's enumeration order (what `--device N` means).
    pub index: usize,
    /// `deviceName`.
    pub name: String,
    /// `deviceUUID` (stable across runs and processes for the same device and driver).
    pub uuid: [u8; 16],
    /// `deviceType`.
    pub kind: vk::PhysicalDeviceType,
    /// Whether it has a compute queue (a device without one cannot be used).
    pub compute: bool,
    /// Whether it supports VK_EXT_external_memory_host.
    pub external_memory_host: bool,
}

impl DeviceInfo {
    /// The UUID as vulkaninfo prints it (8-4-4-4-12 hex digits).
    pub fn uuid_string(&self) -> String {
        format_uuid(&self.uuid)
    }

    /// `cpu`, `discrete-gpu`, ...
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            vk::PhysicalDeviceType::INTEGRATED_GPU => "integrated-gpu",
            vk::PhysicalDeviceType::DISCRETE_GPU => "discrete-gpu",
            vk::PhysicalDeviceType::VIRTUAL_GPU => "virtual-gpu",
            vk::PhysicalDeviceType::CPU => "cpu",
            _ => "other",
        }
    }
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\t{}\t{}\t{}",
            self.index,
            self.name,
            self.uuid_string(),
            self.kind_name()
        )?;
        if !self.compute {
            write!(f, "\t(no compute queue)")?;
        }
        if !self.external_memory_host {
            write!(f, "\t(no VK_EXT_external_memory_host)")?;
        }
        Ok(())
    }
}

/// 8-4-4-4-12 hex digits.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut u = [0u8; 16];
    for (i, b) in u.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(u)
}

/// How `--device` names a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSelector {
    /// The first device with a compute queue, preferring a discrete or integrated GPU.
    Default,
    /// By enumeration index.
    Index(usize),
    /// By `deviceUUID`.
    Uuid([u8; 16]),
    /// By name: an exact match, else the one device whose name contains it
    /// (case-insensitive).
    Name(String),
}

impl DeviceSelector {
    /// Parse `--device`'s argument: a number is an index, 32 hex digits (dashes
    /// allowed) a UUID, anything else a name.
    pub fn parse(s: &str) -> Self {
        if let Ok(i) = s.parse::<usize>() {
            DeviceSelector::Index(i)
        } else if let Some(u) = parse_uuid(s) {
            DeviceSelector::Uuid(u)
        } else {
            DeviceSelector::Name(s.to_string())
        }
    }

    /// Pick one of `devs` (only devices with a compute queue qualify).
    pub fn pick<'a>(&self, devs: &'a [DeviceInfo]) -> Result<&'a DeviceInfo, Error> {
        let usable = || devs.iter().filter(|d| d.compute);
        let found = match self {
            DeviceSelector::Default => {
                let gpu = |d: &&DeviceInfo| {
                    matches!(
                        d.kind,
                        vk::PhysicalDeviceType::DISCRETE_GPU
                            | vk::PhysicalDeviceType::INTEGRATED_GPU
                    )
                };
                usable().find(gpu).or_else(|| usable().next())
            }
            DeviceSelector::Index(i) => usable().find(|d| d.index == *i),
            DeviceSelector::Uuid(u) => usable().find(|d| d.uuid == *u),
            DeviceSelector::Name(n) => {
                if let Some(d) = usable().find(|d| d.name == *n) {
                    Some(d)
                } else {
                    let low = n.to_lowercase();
                    let mut m = usable().filter(|d| d.name.to_lowercase().contains(&low));
                    match (m.next(), m.next()) {
                        (Some(d), None) => Some(d),
                        (Some(_), Some(_)) => {
                            return Err(Error::Device(format!(
                            "--device {n:?} matches more than one device (use the index or UUID)"
                        )))
                        }
                        _ => None,
                    }
                }
            }
        };
        found
            .ok_or_else(|| Error::Device(format!("no Vulkan device with compute matches {self:?}")))
    }
}

/// A loaded Vulkan loader and instance (Vulkan 1.1 or later).
pub(crate) struct Vk {
    // Keeps the loader (libvulkan) loaded while the instance lives.
    pub _entry: ash::Entry,
    pub instance: ash::Instance,
}

impl Vk {
    pub fn new() -> Result<Self, Error> {
        // SAFETY: loads libvulkan.so.1 and resolves its entry points; nothing else runs
        // code from it concurrently in this process while it loads.
        let entry = unsafe { ash::Entry::load() }
            .map_err(|e| Error::NoVulkan(format!("cannot load the Vulkan loader: {e}")))?;
        let app = vk::ApplicationInfo::default()
            .application_name(c"vgpu-executor")
            .api_version(vk::API_VERSION_1_1);
        let ci = vk::InstanceCreateInfo::default().application_info(&app);
        // SAFETY: `ci` and what it points to live across the call.
        let instance = unsafe { entry.create_instance(&ci, None) }
            .map_err(|e| Error::NoVulkan(format!("vkCreateInstance: {e}")))?;
        Ok(Vk {
            _entry: entry,
            instance,
        })
    }

    pub fn physical_devices(&self) -> Result<Vec<vk::PhysicalDevice>, Error> {
        // SAFETY: the instance is valid.
        unsafe { self.instance.enumerate_physical_devices() }
            .map_err(|e| Error::vk("vkEnumeratePhysicalDevices", e))
    }

    pub fn info(&self, index: usize, pd: vk::PhysicalDevice) -> DeviceInfo {
        let mut id = vk::PhysicalDeviceIDProperties::default();
        let mut p2 = vk::PhysicalDeviceProperties2::default().push_next(&mut id);
        // SAFETY: `pd` comes from this instance; `p2`'s chain lives across the call.
        unsafe { self.instance.get_physical_device_properties2(pd, &mut p2) };
        let props = p2.properties;
        let name = props
            .device_name_as_c_str()
            .map(|c: &CStr| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        let uuid = id.device_uuid;
        // SAFETY: `pd` comes from this instance.
        let qf = unsafe {
            self.instance
                .get_physical_device_queue_family_properties(pd)
        };
        let compute = qf
            .iter()
            .any(|q| q.queue_flags.contains(vk::QueueFlags::COMPUTE));
        // SAFETY: `pd` comes from this instance.
        let exts =
            unsafe { self.instance.enumerate_device_extension_properties(pd) }.unwrap_or_default();
        let external_memory_host = exts.iter().any(|e| {
            e.extension_name_as_c_str()
                .is_ok_and(|n| n == ash::ext::external_memory_host::NAME)
        });
        DeviceInfo {
            index,
            name,
            uuid,
            kind: props.device_type,
            compute,
            external_memory_host,
        }
    }

    pub fn list(&self) -> Result<Vec<(DeviceInfo, vk::PhysicalDevice)>, Error> {
        Ok(self
            .physical_devices()?
            .into_iter()
            .enumerate()
            .map(|(i, pd)| (self.info(i, pd), pd))
            .collect())
    }
}

impl Drop for Vk {
    fn drop(&mut self) {
        // SAFETY: every object created from the instance is destroyed before (the
        // executor drops its device first).
        unsafe { self.instance.destroy_instance(None) };
    }
}

/// The Vulkan devices this host has (`--list-devices`).
pub fn list_devices() -> Result<Vec<DeviceInfo>, Error> {
    let vk = Vk::new()?;
    Ok(vk.list()?.into_iter().map(|(d, _)| d).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(index: usize, name: &str, kind: vk::PhysicalDeviceType) -> DeviceInfo {
        DeviceInfo {
            index,
            name: name.into(),
            uuid: [index as u8; 16],
            kind,
            compute: true,
            external_memory_host: true,
        }
    }

    #[test]
    fn selectors() {
        let devs = vec![
            dev(
                0,
                "llvmpipe (LLVM 15.0.6, 256 bits)",
                vk::PhysicalDeviceType::CPU,
            ),
            dev(
                1,
                "AMD Radeon RX 7600",
                vk::PhysicalDeviceType::DISCRETE_GPU,
            ),
            dev(2, "AMD Radeon 780M", vk::PhysicalDeviceType::INTEGRATED_GPU),
        ];
        assert_eq!(DeviceSelector::Default.pick(&devs).map(|d| d.index), Ok(1));
        assert_eq!(
            DeviceSelector::parse("2").pick(&devs).map(|d| d.index),
            Ok(2)
        );
        assert_eq!(
            DeviceSelector::parse("llvmpipe")
                .pick(&devs)
                .map(|d| d.index),
            Ok(0)
        );
        assert!(DeviceSelector::parse("radeon").pick(&devs).is_err());
        assert!(DeviceSelector::parse("7").pick(&devs).is_err());
        let u = devs[2].uuid_string();
        assert_eq!(u, "02020202-0202-0202-0202-020202020202");
        assert_eq!(DeviceSelector::parse(&u), DeviceSelector::Uuid([2; 16]));
        assert_eq!(
            DeviceSelector::parse(&u).pick(&devs).map(|d| d.index),
            Ok(2)
        );
    }
}
