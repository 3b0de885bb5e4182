// Sending and receiving control frames over a SOCK_SEQPACKET Unix socket, with descriptors attached
// (SCM_RIGHTS). One frame per datagram.
#pragma once

#include "proto/errc.hpp"
#include "proto/messages.hpp"

#include <span>
#include <string>
#include <vector>

namespace rvoip::events::proto {

constexpr std::size_t kMaxFds = 4;

// Received descriptors are owned by the caller (close them, or hand them to a Segment).
struct Frame {
    std::vector<std::byte> bytes;
    std::vector<int> fds;
};

Status send_frame(int sock, std::span<const std::byte> frame, std::span<const int> fds = {});
Status send_message(int sock, const Message& m, std::span<const int> fds = {});
// Blocks for one datagram. Errc::closed on an orderly shutdown by the peer; truncated frames and
// control data are reported as malformed (their descriptors are closed).
// `flags` adds recvmsg flags (MSG_DONTWAIT: Errc::would_block when nothing is queued).
Result<Frame> recv_frame(int sock, int flags = 0);

void close_fds(std::vector<int>& fds) noexcept;

// Default control socket path (DESIGN §2): $RVOIP_EVENTS_SOCKET, else /run/rvoip-events/broker.sock for
// root, else $XDG_RUNTIME_DIR/rvoip-events/broker.sock, else /tmp/rvoip-events-<uid>/broker.sock.
std::string default_socket_path();

// Whether the directory holding `socket_path` is one only its owner may use: the user-mode fallback
// /tmp/rvoip-events-<uid>, or anything under $XDG_RUNTIME_DIR. Such a directory must be ours and mode
// 0700; in /tmp anyone could have made it first and put their own "broker" in it.
bool private_socket_dir(const std::string& socket_path);
// Status of a private socket directory: an error naming its owner or mode when another user could
// have placed or replaced the socket in it.
Status check_private_dir(const std::string& dir);

}  // namespace rvoip::events::proto
