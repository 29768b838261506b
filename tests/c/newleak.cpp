// C++ under the preload library, for tests/preload.rs: new and delete reach
// malloc and free through libstdc++ (aligned new through aligned_alloc), and
// a thread_local with a destructor allocates as its thread exits.
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <thread>
#include <vector>

struct Widget {
  long a[6];  // 48 bytes
};

struct alignas(64) Aligned {
  char b[128];
};

// Not static: keeps the allocations (see threads.c).
int *kept_array;
Widget *kept_widget;
Aligned *kept_aligned;
std::vector<std::string *> kept_strings;

__attribute__((noinline)) void leak_new() {
  kept_array = new int[250];  // 1000 bytes
  std::memset(kept_array, 1, 1000);
  kept_widget = new Widget();
}

__attribute__((noinline)) void leak_aligned_new() { kept_aligned = new Aligned(); }

__attribute__((noinline)) void churn_containers() {
  for (int r = 0; r < 200; r++) {
    std::vector<std::string> v;
    for (int i = 0; i < 50; i++) v.push_back(std::string(static_cast<size_t>(i * 3 + 20), 'x'));
    auto *w = new Widget[7];
    delete[] w;
    auto *a = new Aligned[3];
    delete[] a;
  }
}

struct TlsThing {
  std::vector<int> v;
  ~TlsThing() {
    auto *tmp = new std::string(100, 't');
    delete tmp;
  }
};
thread_local TlsThing tls_thing;

int main() {
  leak_new();
  leak_aligned_new();
  churn_containers();
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; i++)
    threads.emplace_back([i] {
      tls_thing.v.resize(static_cast<size_t>(100 + i));
      churn_containers();
    });
  for (auto &t : threads) t.join();
  std::printf("c++: done\n");
  return 0;
}
