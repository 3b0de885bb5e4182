// The ring's guarantees as a user of the library sees them, on an embedded broker: loans and publishes
// on one lane, Critical-first behind padding and open claims, a corrupt record reported once, timeouts
// of any size.
#include "rvoip/events.hpp"
#include "tests/client/embedded.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <thread>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

using namespace rvoip::events;

namespace {

struct Alarm {
    static constexpr std::string_view event_type = "trust.alarm";
    std::uint64_t n;
};

EventSystem embedded() { return test::embedded("trust-test"); }

// The topic's data segment, mapped writable as only a misbehaving publisher could: the embedded broker
// lives in this process, so the test finds its sealed segment (a memfd) among our own descriptors and
// scribbles through it like such a process would through its descriptor.
struct Scribbler {
    void* base = MAP_FAILED;
    std::size_t size = 0;
    explicit Scribbler(std::string_view topic, std::string_view segment = "data") {
        const std::string suffix = "." + std::string(topic) + "." + std::string(segment) + " (deleted)";
        const std::string mine = "/memfd:rvoip-events-embedded-" + std::to_string(::getpid()) + "-";
        for (auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
            std::error_code ec;
            const auto name = std::filesystem::read_symlink(e.path(), ec).string();
            if (!ec && name.starts_with(mine) && name.ends_with(suffix)) {
                int fd = ::open(e.path().c_str(), O_RDWR);
                REQUIRE(fd >= 0);
                size = std::filesystem::file_size(e.path());
                base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
                ::close(fd);
            }
        }
        REQUIRE(base != MAP_FAILED);
    }
    ~Scribbler() {
        if (base != MAP_FAILED) ::munmap(base, size);
    }
    layout::SubscriberSlot& slot(std::uint32_t i) {
        return reinterpret_cast<layout::SubscriberSlot*>(static_cast<std::byte*>(base) + sizeof(layout::CursorHeader))[i];
    }
    layout::RecordHeader* record(std::size_t lane, std::uint64_t pos) {
        auto* h = static_cast<layout::TopicHeader*>(base);
        auto* ring = static_cast<std::byte*>(base) + h->ring_offset[lane];
        return reinterpret_cast<layout::RecordHeader*>(ring + (pos & (h->lanes[lane].capacity - 1)));
    }
};

}  // namespace

TEST_CASE("a publish on the lane of an open loan is refused; other lanes are free") {
    auto bus = embedded();
    auto sub = bus.subscriber<Alarm>();
    auto pub = bus.publisher<Alarm>();
    REQUIRE((sub && pub));
    auto loan = pub->loan(Priority::high);
    REQUIRE(loan.has_value());
    (*loan)->n = 1;
    auto refused = pub->publish(Alarm{2}, Priority::high);
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().code == Errc::loan_outstanding);
    CHECK(refused.error().message.find("high lane") != std::string::npos);
    REQUIRE(pub->publish(Alarm{3}, Priority::low).has_value());
    REQUIRE(std::move(*loan).commit().has_value());
    REQUIRE(pub->publish(Alarm{4}, Priority::high).has_value());  // the loan is gone: the lane is free again
    std::vector<std::uint64_t> got;
    for (int i = 0; i < 3; ++i) {
        auto s = sub->receive_for(std::chrono::seconds(10));
        REQUIRE(s.has_value());
        got.push_back((*s)->n);
    }
    CHECK(got == std::vector<std::uint64_t>{1, 4, 3});  // High first, in order; then Low
}

TEST_CASE("a loan committed to another lane keeps its own lane's claim until it is padded") {
    auto bus = embedded();
    auto sub = bus.subscriber<Alarm>();
    auto pub = bus.publisher<Alarm>();
    REQUIRE((sub && pub));
    auto loan = pub->loan(Priority::low);
    REQUIRE(loan.has_value());
    (*loan)->n = 8;
    REQUIRE(std::move(*loan).commit(Priority::critical).has_value());
    REQUIRE(pub->publish(Alarm{9}, Priority::low).has_value());
    auto a = sub->receive_for(std::chrono::seconds(10));
    auto b = sub->receive_for(std::chrono::seconds(10));
    REQUIRE((a && b));
    CHECK((*a)->n == 8);
    CHECK(a->priority() == Priority::critical);
    CHECK((*b)->n == 9);  // the loan's Low claim became padding: nothing stalls behind it
}

TEST_CASE("a Critical event behind several dropped Critical loans is still served before Low events") {
    auto bus = embedded();
    auto sub = bus.subscriber<Alarm>();
    auto pub = bus.publisher<Alarm>();
    REQUIRE((sub && pub));
    for (int i = 0; i < 4; ++i) {
        auto loan = pub->loan(Priority::critical);
        REQUIRE(loan.has_value());
    }  // each dropped: four paddings in a row on the Critical lane
    REQUIRE(pub->publish(Alarm{1}, Priority::low).has_value());
    REQUIRE(pub->publish(Alarm{2}, Priority::critical).has_value());
    auto s = sub->try_receive();
    REQUIRE(s.has_value());
    CHECK(s->priority() == Priority::critical);
    CHECK((*s)->n == 2);
}

TEST_CASE("an open Critical loan holds back the Critical records behind it, and only those") {
    // The rule (docs/architecture.md): records of a lane are delivered in claim order, so a committed
    // Critical record behind an open Critical claim waits for that claim; lower lanes are served meanwhile.
    // Critical-first holds for every committed record before the first open claim.
    auto bus = embedded();
    auto sub = bus.subscriber<Alarm>();
    auto builder = bus.publisher<Alarm>();
    auto other = bus.publisher<Alarm>();
    REQUIRE((sub && builder && other));
    REQUIRE(other->publish(Alarm{1}, Priority::critical).has_value());  // before the open claim
    auto loan = builder->loan(Priority::critical);
    REQUIRE(loan.has_value());
    (*loan)->n = 2;
    REQUIRE(other->publish(Alarm{3}, Priority::critical).has_value());  // behind it
    REQUIRE(other->publish(Alarm{4}, Priority::low).has_value());
    auto a = sub->try_receive();
    REQUIRE(a.has_value());
    CHECK((*a)->n == 1);
    auto b = sub->try_receive();
    REQUIRE(b.has_value());
    CHECK((*b)->n == 4);  // Low, while the Critical lane waits for the loan
    REQUIRE(std::move(*loan).commit().has_value());
    auto c = sub->try_receive();
    auto d = sub->try_receive();
    REQUIRE((c && d));
    CHECK((*c)->n == 2);
    CHECK((*d)->n == 3);
}

TEST_CASE("a corrupt record is reported once with its offset; the subscriber then keeps working") {
    auto bus = embedded();
    auto sub = bus.subscriber<Alarm>();
    auto pub = bus.publisher<Alarm>();
    REQUIRE((sub && pub));
    REQUIRE(pub->publish(Alarm{1}, Priority::critical).has_value());
    REQUIRE(pub->publish(Alarm{2}, Priority::low).has_value());
    Scribbler s(Alarm::event_type);
    s.record(0, 0)->length = 3;  // not sizeof(Alarm)
    auto bad = sub->try_receive();
    REQUIRE_FALSE(bad.has_value());
    CHECK(bad.error().code == Errc::corrupt);
    CHECK(bad.error().message.find("critical lane") != std::string::npos);
    CHECK(bad.error().message.find("ring offset 0") != std::string::npos);
    auto low = sub->try_receive();  // the Critical lane resynchronised; Low is served
    REQUIRE(low.has_value());
    CHECK((*low)->n == 2);
    REQUIRE(pub->publish(Alarm{3}, Priority::critical).has_value());
    auto next = sub->try_receive();
    REQUIRE(next.has_value());
    CHECK((*next)->n == 3);
}

TEST_CASE("receive_for takes any timeout: negative checks once, huge waits, nothing overflows") {
    auto bus = embedded();
    auto sub = bus.subscriber<Alarm>();
    auto pub = bus.publisher<Alarm>();
    REQUIRE((sub && pub));
    // A safety net, so that a regression shows as a failed check rather than a hang.
    std::thread late([&] {
        std::this_thread::sleep_for(std::chrono::seconds(3));
        (void)pub->publish(Alarm{7});
    });
    auto neg = sub->receive_for(std::chrono::seconds(-5));  // waiting (forever) would return the late event instead
    REQUIRE_FALSE(neg.has_value());
    CHECK(neg.error().code == Errc::timeout);
    auto min = sub->receive_for(std::chrono::nanoseconds::min());
    REQUIRE_FALSE(min.has_value());
    CHECK(min.error().code == Errc::timeout);
    auto huge = sub->receive_for(std::chrono::hours::max());  // waits (no overflow into "expired") until the event
    REQUIRE(huge.has_value());
    CHECK((*huge)->n == 7);
    late.join();
    auto fp = sub->receive_for(std::chrono::duration<double>(-1.5));
    CHECK_FALSE(fp.has_value());
}

TEST_CASE("wake-ups go by slot: a subscriber that rewrites its slot's doorbell field misdirects nobody's") {
    auto bus = embedded();
    auto first = bus.subscriber<Alarm>();   // slot 0
    auto second = bus.subscriber<Alarm>();  // slot 1
    REQUIRE((first && second));
    auto pub = bus.publisher<Alarm>();
    REQUIRE(pub.has_value());
    Scribbler cursors(Alarm::event_type, "cursors");
    cursors.slot(0).doorbell = 1;     // slot 0 claims slot 1's doorbell,
    cursors.slot(1).doorbell = 4000;  // slot 1 one beyond any segment
    // Both still get their wake-ups: publishers ring bell i of the topic's own segment for slot i and
    // read no index from the cursors.
    bool got_first = false, got_second = false;
    std::thread a([&] { got_first = first->receive_for(std::chrono::seconds(30)).has_value(); });
    std::thread b([&] { got_second = second->receive_for(std::chrono::seconds(30)).has_value(); });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // both parked (or about to: either way they must wake)
    REQUIRE(pub->publish(Alarm{}).has_value());
    a.join();
    b.join();
    CHECK(got_first);
    CHECK(got_second);
}
