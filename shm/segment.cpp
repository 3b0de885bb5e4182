#include "shm/segment.hpp"

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>

#include <cerrno>
#include <utility>
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

constexpr int kSizeSeals = F_SEAL_SHRINK | F_SEAL_GROW;

}  // namespace

bool is_sealed(int fd) noexcept {
    const int seals = ::fcntl(fd, F_GET_SEALS);
    return seals >= 0 && (seals & kSizeSeals) == kSizeSeals;
}

Segment::Segment() = default;
Segment::Segment(Segment&& o) noexcept
    : name_(std::move(o.name_)), object_(std::move(o.object_)), region_(std::move(o.region_)), fd_(std::exchange(o.fd_, -1)) {}
Segment& Segment::operator=(Segment&& o) noexcept {
    if (this != &o) {
        region_.reset();
        if (fd_ >= 0) ::close(fd_);
        name_ = std::move(o.name_);
        object_ = std::move(o.object_);
        region_ = std::move(o.region_);
        fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
}
Segment::~Segment() {
    region_.reset();
    if (fd_ >= 0) ::close(fd_);
}

std::span<std::byte> Segment::bytes() const noexcept {
    if (!region_) return {};
    return {static_cast<std::byte*>(region_->get_address()), region_->get_size()};
}

// Sealed segments are memfds: the only shared memory whose size the kernel lets its creator freeze
// (F_SEAL_SHRINK | F_SEAL_GROW), so that a client holding a writable descriptor can write the ring but can
// never truncate it and make another process's next access raise SIGBUS.
static Result<Segment> create_sealed(const std::string& name, std::size_t size) {
    auto failed = [&](Errc code, const char* step, int e) {
        return fail(code, "cannot create sealed shared memory '" + name + "' of " + std::to_string(size) + " bytes: " + step +
                              ": " + std::strerror(e));
    };
    int fd = ::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return failed(errno == EMFILE || errno == ENFILE ? Errc::limit_reached : Errc::internal, "memfd_create", errno);
    auto close_and = [&](Errc code, const char* step, int e) {
        ::close(fd);
        return failed(code, step, e);
    };
    // A memfd is created mode 0777: reopening a descriptor through /proc/<pid>/fd goes by that mode, so a
    // subscriber could turn its read-only data descriptor into a writable one. 0600: only our user can.
    if (::fchmod(fd, 0600) != 0) return close_and(Errc::internal, "fchmod", errno);
    if (::ftruncate(fd, static_cast<off_t>(size)) != 0) return close_and(Errc::internal, "ftruncate", errno);
    // Reserve the pages now, as for named segments (a full tmpfs would SIGBUS the first toucher later).
    if (int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(size)); rc != 0)
        return close_and(rc == ENOSPC ? Errc::limit_reached : Errc::internal, "reserving its pages", rc);
    if (::fcntl(fd, F_ADD_SEALS, kSizeSeals | F_SEAL_SEAL) != 0) return close_and(Errc::internal, "sealing", errno);
    return Segment::adopt_fd(fd, name);
}

Result<Segment> Segment::adopt_fd(int fd, const std::string& name) {
    struct stat st{};
    auto refuse = [&](std::string why) {
        ::close(fd);
        return fail(Errc::corrupt, "segment '" + name + "' " + why);
    };
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) return refuse("has no size");
    if (!is_sealed(fd)) return refuse("is not sealed against shrinking and growing");
    if ((::fcntl(fd, F_GETFL) & O_ACCMODE) != O_RDWR) return refuse("is not writable");
    try {
        Segment s;
        s.name_ = name;
        s.region_ = std::make_unique<bip::mapped_region>(FdMappable{fd}, bip::read_write, 0, static_cast<std::size_t>(st.st_size));
        s.fd_ = fd;
        return s;
    } catch (const bip::interprocess_exception& e) {
        return refuse(std::string("cannot be mapped: ") + e.what());
    }
}

Result<Segment> Segment::create(const std::string& name, std::size_t size, Backing backing) {
    if (backing == Backing::sealed) return create_sealed(name, size);
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
    if (!object_ || !region_) return true;  // received or sealed: nobody can shrink it
    struct stat st{};
    if (::fstat(object_->get_mapping_handle().handle, &st) != 0) return false;
    return static_cast<std::uint64_t>(st.st_size) >= region_->get_size();
}

Result<int> Segment::dup_fd(Access access) const {
    // Reopen rather than dup(): a dup shares the open file description and its write access, and only a
    // description opened read-only refuses a writable mapping. A memfd has no name: it is reopened
    // through /proc, which checks the mode set at creation (only our user may).
    const int flags = (access == Access::read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    std::string path = fd_ >= 0 ? "/proc/self/fd/" + std::to_string(fd_) : "/" + name_;
    int fd = fd_ >= 0 ? ::open(path.c_str(), flags) : ::shm_open(path.c_str(), flags, 0);
    if (fd < 0) return fail(Errc::internal, "cannot reopen shared memory '" + name_ + "': " + std::strerror(errno));
    return fd;
}

}  // namespace rvoip::events::shm
