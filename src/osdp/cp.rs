//! A LibOSDP control panel (CP) context for one bus, over the C API of `libosdp-sys`.
//!
//! The `libosdp` crate's own `ControlPanel` hides its C context, and the agent needs calls it
//! does not wrap: disabling and re-enabling a reader (LibOSDP otherwise waits 300 s before it
//! tries an offline reader again) and notifications (whether the secure channel came up with
//! the reader's own key or the install-mode key). This wrapper is those few calls; the
//! protocol, the secure channel and the command/event encodings stay LibOSDP's, and the
//! `libosdp` crate's types and conversions are used for commands, events and the channel.
//!
//! Not `Sync`: one port thread owns it and calls everything, callbacks included, on itself.

use libosdp::{Channel, OsdpCommand, OsdpEvent, OsdpEventCardRead, OsdpStatusReportType};
use libosdp_sys as sys;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_ulong, c_void, CString};
use std::sync::Once;

/// One reader on the bus, as the CP is set up with it.
pub struct PdSetup {
    /// Name in LibOSDP's own log lines.
    pub name: String,
    pub address: u8,
    pub baud: u32,
    /// The reader's SCBK; `None` runs it without a secure channel.
    pub key: Option<[u8; 16]>,
    /// Refuse anything but a secure channel with `key` (no SCBK-D, no plain text).
    pub enforce_secure: bool,
}

/// What LibOSDP reported during a refresh, per reader index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpEvent {
    Card(OsdpEventCardRead),
    /// osdp_KEYPAD bytes.
    Keys(Vec<u8>),
    /// osdp_LSTATR: tamper and power as the reader reports them.
    LocalStatus {
        tamper: bool,
        power_failure: bool,
    },
    /// The secure channel came up or went down; `default_key`: it runs on SCBK-D.
    SecureChannel {
        active: bool,
        default_key: bool,
    },
}

type EventQueue = RefCell<Vec<(usize, CpEvent)>>;

pub struct ControlPanel {
    ctx: *mut c_void,
    events: Box<EventQueue>,
    /// The boxed channel LibOSDP calls into; freed after teardown.
    channel_data: *mut c_void,
    readers: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("LibOSDP could not set up the control panel for {0}")]
pub struct SetupError(pub String);

impl ControlPanel {
    /// Sets up a CP for `readers`, all on `channel`. Nothing is sent until `refresh`.
    pub fn new(channel: Box<dyn Channel>, readers: &[PdSetup]) -> Result<ControlPanel, SetupError> {
        install_log_forwarding();
        let describe = || {
            readers
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let channel: sys::osdp_channel = channel.into();
        let channel_data = channel.data;
        let names: Vec<CString> = readers
            .iter()
            .map(|r| CString::new(r.name.replace('\0', "")).unwrap_or_default())
            .collect();
        let keys: Vec<Option<[u8; 16]>> = readers.iter().map(|r| r.key).collect();
        let infos: Vec<sys::osdp_pd_info_t> = readers
            .iter()
            .zip(&names)
            .zip(&keys)
            .map(|((reader, name), key)| {
                let mut flags = sys::OSDP_FLAG_ENABLE_NOTIFICATION;
                if reader.enforce_secure {
                    flags |= sys::OSDP_FLAG_ENFORCE_SECURE;
                }
                sys::osdp_pd_info_t {
                    name: name.as_ptr(),
                    baud_rate: reader.baud as c_int,
                    address: c_int::from(reader.address),
                    flags: flags as c_int,
                    // SAFETY: a plain C struct of integers; the CP ignores it.
                    id: unsafe { std::mem::zeroed() },
                    cap: std::ptr::null(),
                    channel,
                    scbk: key.as_ref().map_or(std::ptr::null(), |k| k.as_ptr()),
                }
            })
            .collect();
        // SAFETY: `infos` and the names and keys it points to outlive the call; LibOSDP copies
        // names, keys and the channel struct into its own context.
        let ctx = unsafe { sys::osdp_cp_setup(infos.len() as c_int, infos.as_ptr()) };
        if ctx.is_null() {
            // SAFETY: LibOSDP did not take the channel; it is ours to free.
            unsafe { drop(Box::from_raw(channel_data as *mut Box<dyn Channel>)) };
            return Err(SetupError(describe()));
        }
        let events: Box<EventQueue> = Box::default();
        // SAFETY: `events` lives as long as the context (dropped after teardown) and is only
        // touched on this thread, inside refresh().
        unsafe {
            sys::osdp_cp_set_event_callback(ctx, Some(on_event), &*events as *const EventQueue as *mut c_void)
        };
        Ok(ControlPanel {
            ctx,
            events,
            channel_data,
            readers: readers.len(),
        })
    }

    /// Lets LibOSDP send, receive and time out; call at least every 50 ms.
    pub fn refresh(&mut self) {
        // SAFETY: ctx is a live CP context.
        unsafe { sys::osdp_cp_refresh(self.ctx) }
    }

    /// Events reported since the last call.
    pub fn take_events(&mut self) -> Vec<(usize, CpEvent)> {
        std::mem::take(&mut *self.events.borrow_mut())
    }

    /// Queues a command for reader `index`; fails when the reader is not online.
    pub fn send(&mut self, index: usize, command: OsdpCommand) -> bool {
        let command: sys::osdp_cmd = command.into();
        // SAFETY: ctx is live; LibOSDP copies the command.
        unsafe { sys::osdp_cp_send_command(self.ctx, index as c_int, &command) == 0 }
    }

    /// Whether LibOSDP has reader `index` in its online state.
    pub fn is_online(&self, index: usize) -> bool {
        self.mask_bit(index, sys::osdp_get_status_mask)
    }

    /// Whether the secure channel with reader `index` is up.
    pub fn is_secure(&self, index: usize) -> bool {
        self.mask_bit(index, sys::osdp_get_sc_status_mask)
    }

    fn mask_bit(&self, index: usize, get: unsafe extern "C" fn(*const c_void, *mut u8)) -> bool {
        // 126 readers at most: 16 bytes of bits.
        let mut mask = [0u8; 16];
        // SAFETY: ctx is live and the mask has room for every reader.
        unsafe { get(self.ctx, mask.as_mut_ptr()) };
        index < self.readers && mask[index / 8] & (1 << (index % 8)) != 0
    }

    /// Sets or clears "secure channel with the reader's own key only" for reader `index`.
    pub fn set_enforce_secure(&mut self, index: usize, enforce: bool) {
        // SAFETY: ctx is live; the flag is one LibOSDP allows at run time.
        unsafe { sys::osdp_cp_modify_flag(self.ctx, index as c_int, sys::OSDP_FLAG_ENFORCE_SECURE, enforce) };
    }

    /// Takes reader `index` out of service (LibOSDP disables it on the next refresh).
    pub fn disable(&mut self, index: usize) {
        // SAFETY: ctx is live. Fails harmlessly when already disabled.
        unsafe { sys::osdp_cp_disable_pd(self.ctx, index as c_int) };
    }

    /// Puts a disabled reader `index` back in service: LibOSDP starts afresh with ID, CAP and
    /// the secure channel. Returns false while the disable is still pending.
    pub fn enable(&mut self, index: usize) -> bool {
        // SAFETY: ctx is live.
        unsafe {
            if sys::osdp_cp_is_pd_enabled(self.ctx, index as c_int) {
                return false;
            }
            sys::osdp_cp_enable_pd(self.ctx, index as c_int) == 0
        }
    }
}

impl Drop for ControlPanel {
    fn drop(&mut self) {
        // SAFETY: teardown closes the channel (for every reader) and frees the context; the
        // boxed channel is then no longer referenced and is ours to free.
        unsafe {
            sys::osdp_cp_teardown(self.ctx);
            drop(Box::from_raw(self.channel_data as *mut Box<dyn Channel>));
        }
    }
}

/// Event callback: runs inside `osdp_cp_refresh` on the port thread; parses and queues.
unsafe extern "C" fn on_event(data: *mut c_void, pd: c_int, event: *mut sys::osdp_event) -> c_int {
    // SAFETY: `data` is the EventQueue registered with this context and `event` points to an
    // event LibOSDP filled for this call.
    let (queue, event) = unsafe { (&*(data as *const EventQueue), std::ptr::read_unaligned(event)) };
    let parsed = if event.type_ == sys::osdp_event_type_OSDP_EVENT_NOTIFICATION {
        // SAFETY: the type says which union member is filled.
        let notification = unsafe { event.__bindgen_anon_1.notif };
        if notification.type_ != sys::osdp_event_notification_type_OSDP_EVENT_NOTIFICATION_SC_STATUS {
            return 0;
        }
        CpEvent::SecureChannel {
            active: notification.arg0 != 0,
            default_key: notification.arg1 != 0,
        }
    } else {
        match OsdpEvent::try_from(event) {
            Ok(OsdpEvent::CardRead(card)) => CpEvent::Card(card),
            Ok(OsdpEvent::KeyPress(keys)) => CpEvent::Keys(keys.data),
            Ok(OsdpEvent::Status(report)) if report.type_ == OsdpStatusReportType::Local => {
                CpEvent::LocalStatus {
                    tamper: report.nr_entries > 0 && report.report[0] != 0,
                    power_failure: report.nr_entries > 1 && report.report[1] != 0,
                }
            }
            Ok(_) => return 0,
            Err(error) => {
                tracing::debug!(reader = pd, %error, "OSDP event not understood; ignored");
                return -1;
            }
        }
    };
    if let Ok(mut queue) = queue.try_borrow_mut() {
        queue.push((pd as usize, parsed));
    }
    0
}

/// LibOSDP's log lines go to the agent's log at debug level: they are protocol detail (each
/// probe of a missing reader is an error line there); the port thread logs what matters.
fn install_log_forwarding() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a callback that only reads the message it is given.
        unsafe { sys::osdp_set_log_callback(Some(forward_log)) }
    });
}

unsafe extern "C" fn forward_log(level: c_int, _file: *const c_char, _line: c_ulong, message: *const c_char) {
    if message.is_null() {
        return;
    }
    // SAFETY: LibOSDP passes a NUL-terminated line.
    let message = unsafe { std::ffi::CStr::from_ptr(message) }.to_string_lossy();
    tracing::debug!(target: "libosdp", level, "{}", message.trim_end());
}
