// UDP doorbell: one datagram to 127.0.0.1:<port>, sent synchronously.
#pragma once

#include <napi.h>

namespace shmbus {

// udpDoorbell(port, byte): sendto() now, from the calling thread, so the bell rings
// even if the JS caller does not return to its event loop soon (node:dgram sends
// from a later tick). Returns true if the datagram was queued, false on EAGAIN /
// ENOBUFS / ECONNREFUSED (the caller counts it); throws on a bad port.
Napi::Value UdpDoorbell(const Napi::CallbackInfo& info);

}  // namespace shmbus
