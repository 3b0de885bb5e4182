// RAII over one mapped shared-memory segment (Boost.Interprocess underneath).
//
// The broker creates named segments (mode 0600, its own user) and hands clients descriptors over the
// control socket; clients map those descriptors, read-only or read-write as the broker opened them.
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

class Segment {
public:
    // Broker: creates `name` (no leading slash) of `size` zero bytes, replacing a stale one of that name.
    static Result<Segment> create(const std::string& name, std::size_t size);
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

    // Broker: whether the segment still has the size it was mapped with (fstat). A client holding a
    // writable descriptor can truncate it, and touching the lost pages would then raise SIGBUS: the
    // broker checks before it touches a segment a client could have shrunk. (Segments mapped from a
    // received descriptor always answer true.)
    bool intact() const noexcept;

    // Broker: a new descriptor of this named segment, for SCM_RIGHTS. The caller closes it.
    Result<int> dup_fd(Access access) const;

private:
    std::string name_;
    std::unique_ptr<boost::interprocess::shared_memory_object> object_;
    std::unique_ptr<boost::interprocess::mapped_region> region_;
};

}  // namespace rvoip::events::shm
