// UDP doorbell: one datagram to the loopback, sent synchronously (see doorbell.h).

#include "doorbell.h"

#include <arpa/inet.h>
#include <cerrno>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mutex>

#include "errors.h"

namespace shmbus {

namespace {

// One non-blocking socket per process, shared by every thread (sendto is thread-safe).
int DoorbellSocket(Napi::Env env) {
  static std::once_flag once;
  static int fd = -1;
  static int error = 0;
  std::call_once(once, [] {
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) error = errno;
  });
  if (fd < 0) ThrowSystemError(env, error, "socket");
  return fd;
}

}  // namespace

Napi::Value UdpDoorbell(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    ThrowTypeError(env, "udpDoorbell(port, byte): port and byte must be numbers");
  }
  const double port = info[0].As<Napi::Number>().DoubleValue();
  const double byte = info[1].As<Napi::Number>().DoubleValue();
  if (!(port >= 1 && port <= 65535) || port != static_cast<int>(port)) ThrowRangeError(env, "udpDoorbell: port must be an integer in [1, 65535]");
  if (!(byte >= 0 && byte <= 255) || byte != static_cast<int>(byte)) ThrowRangeError(env, "udpDoorbell: byte must be an integer in [0, 255]");
  const int fd = DoorbellSocket(env);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const unsigned char datagram = static_cast<unsigned char>(byte);
  ssize_t sent;
  do {
    sent = sendto(fd, &datagram, 1, 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
  } while (sent < 0 && errno == EINTR);
  if (sent == 1) return Napi::Boolean::New(env, true);
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == ECONNREFUSED) return Napi::Boolean::New(env, false);
  ThrowSystemError(env, errno, "sendto");
}

}  // namespace shmbus
