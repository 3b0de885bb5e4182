#include "shm/segment.hpp"

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bip = boost::interprocess;

namespace rvoip::events::shm {
namespace {

// Lets bip::mapped_region map a descriptor that arrived over SCM_RIGHTS rather than one it opened by name.
struct FdMappable {
    int fd;
    bip::mapping_handle_t get_mapping_handle() const noexcept { return bip::ipcdetail::mapping_handle_from_file_handle(fd); }
};

bip::mode_t mode_of(Access a) { return a == Access::read_only ? bip::read_only : bip::read_write; }

}  // namespace

Segment::Segment() = default;
Segment::Segment(Segment&&) noexcept = default;
Segment& Segment::operator=(Segment&&) noexcept = default;
Segment::~Segment() = default;

std::span<std::byte> Segment::bytes() const noexcept {
    if (!region_) return {};
    return {static_cast<std::byte*>(region_->get_address()), region_->get_size()};
}

Result<Segment> Segment::create(const std::string& name, std::size_t size) {
    try {
        bip::shared_memory_object::remove(name.c_str());
        bip::permissions perm(0600);
        Segment s;
        s.name_ = name;
        s.object_ = std::make_unique<bip::shared_memory_object>(bip::create_only, name.c_str(), bip::read_write, perm);
        s.object_->truncate(static_cast<bip::offset_t>(size));
        // Reserve the pages now: a tmpfs that fills up later would otherwise kill the first process that
        // touches an unbacked page with SIGBUS, long after the segment was handed out.
        if (int rc = ::posix_fallocate(s.object_->get_mapping_handle().handle, 0, static_cast<off_t>(size)); rc != 0) {
            bip::shared_memory_object::remove(name.c_str());
            return fail(rc == ENOSPC ? Errc::limit_reached : Errc::internal,
                        "cannot reserve " + std::to_string(size) + " bytes of shared memory for '" + name + "': " + std::strerror(rc));
        }
        s.region_ = std::make_unique<bip::mapped_region>(*s.object_, bip::read_write, 0, size);
        return s;
    } catch (const bip::interprocess_exception& e) {
        return fail(Errc::internal, "cannot create shared memory '" + name + "' of " + std::to_string(size) + " bytes: " + e.what());
    }
}

Result<Segment> Segment::open(const std::string& name, Access access) {
    try {
        Segment s;
        s.name_ = name;
        s.object_ = std::make_unique<bip::shared_memory_object>(bip::open_only, name.c_str(), mode_of(access));
        s.region_ = std::make_unique<bip::mapped_region>(*s.object_, mode_of(access));
        return s;
    } catch (const bip::interprocess_exception& e) {
        auto code = e.get_error_code() == bip::security_error ? Errc::permission_denied : Errc::no_such_topic;
        return fail(code, "cannot open shared memory '" + name + "': " + e.what());
    }
}

Result<Segment> Segment::map_fd(int fd, Access access, const std::string& what) {
    struct stat st{};
    if (::fstat(fd, &st) != 0 || st.st_size <= 0) {
        ::close(fd);
        return fail(Errc::corrupt, what + ": descriptor from the broker has no size");
    }
    try {
        Segment s;
        s.name_ = what;
        s.region_ = std::make_unique<bip::mapped_region>(FdMappable{fd}, mode_of(access), 0, static_cast<std::size_t>(st.st_size));
        ::close(fd);  // the mapping keeps the memory
        return s;
    } catch (const bip::interprocess_exception& e) {
        ::close(fd);
        return fail(Errc::permission_denied, "cannot map " + what + ": " + e.what());
    }
}

bool Segment::remove(const std::string& name) noexcept { return bip::shared_memory_object::remove(name.c_str()); }

bool Segment::intact() const noexcept {
    if (!object_ || !region_) return true;
    struct stat st{};
    if (::fstat(object_->get_mapping_handle().handle, &st) != 0) return false;
    return static_cast<std::uint64_t>(st.st_size) >= region_->get_size();
}

Result<int> Segment::dup_fd(Access access) const {
    // Reopen by name rather than dup(): a read-only descriptor cannot be turned into a writable mapping.
    std::string path = "/" + name_;
    int fd = ::shm_open(path.c_str(), (access == Access::read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC, 0);
    if (fd < 0) return fail(Errc::internal, "cannot reopen shared memory '" + name_ + "': " + std::strerror(errno));
    return fd;
}

}  // namespace rvoip::events::shm
