// RAII over one mapped shared-memory segment.
//
// The broker creates segments (mode 0600, its own user) and hands clients descriptors over the control
// socket; clients map those descriptors, read-only or read-write as the broker opened them. A segment is
// either sealed (a memfd whose size no descriptor can change, so no client can make another party's
// pages vanish under it; kept across broker restarts by a keeper such as systemd's fd store) or named
// (a /dev/shm file, Boost.Interprocess underneath, kept by name but open to truncation by any client
// holding a writable descriptor: see docs/security.md).
#pragma once

#include "proto/errc.hpp"

#include <cstddef>
#include <memory>
#include <span>
#include <string>

namespace boost::interprocess {
class mapped_region;
class shared_memory_object;
}  // namespace boost::interprocess

namespace rvoip::events::shm {

enum class Access { read_only, read_write };
enum class Backing { sealed, named };

class Segment {
public:
    // Broker: creates `name` (no leading slash) of `size` zero bytes. Named: replaces a stale file of that
    // name. Sealed: `name` only labels the memfd (/proc/<pid>/fd shows it) and the keeper's entry.
    static Result<Segment> create(const std::string& name, std::size_t size, Backing backing = Backing::named);
    // Broker: takes back a sealed segment a keeper held across a restart (takes ownership of `fd`). It must
    // be writable and sealed against shrinking and growing, or it is refused (it is not one of ours).
    static Result<Segment> adopt_fd(int fd, const std::string& name);
    // Broker: opens an existing segment (re-adoption, inspection).
    static Result<Segment> open(const std::string& name, Access access);
    // Client: maps a descriptor received from the broker. Takes ownership of `fd` (closes it).
    static Result<Segment> map_fd(int fd, Access access, const std::string& what);
    // Removes a named segment; mappings stay valid until unmapped.
    static bool remove(const std::string& name) noexcept;

    Segment();
    Segment(Segment&&) noexcept;
    Segment& operator=(Segment&&) noexcept;
    ~Segment();

    std::span<std::byte> bytes() const noexcept;
    const std::string& name() const noexcept { return name_; }
    explicit operator bool() const noexcept { return region_ != nullptr; }
    bool sealed() const noexcept { return fd_ >= 0; }
    // Broker, sealed segments: the descriptor the segment lives by (for the keeper; still owned here).
    int fd() const noexcept { return fd_; }

    // Broker: whether the segment still has the size it was mapped with (fstat). A client holding a
    // writable descriptor can truncate it, and touching the lost pages would then raise SIGBUS: the
    // broker checks before it touches a segment a client could have shrunk. (Segments mapped from a
    // received descriptor, and sealed ones, always answer true.)
    bool intact() const noexcept;

    // Broker: a new descriptor of this segment, for SCM_RIGHTS, opened anew (never a dup of a writable one
    // when read-only is asked: a read-only descriptor cannot be turned into a writable mapping). The
    // caller closes it.
    Result<int> dup_fd(Access access) const;

private:
    std::string name_;
    std::unique_ptr<boost::interprocess::shared_memory_object> object_;
    std::unique_ptr<boost::interprocess::mapped_region> region_;
    int fd_ = -1;  // sealed segments: the memfd
};

// Whether a descriptor is sealed against shrinking and growing (what a sealed segment's parties rely on).
bool is_sealed(int fd) noexcept;

}  // namespace rvoip::events::shm
