/* A shared library with TLS, for tests/preload.rs (dlopened by dlopener.c).
 * The block is too big for the static TLS surplus, so each thread's copy is
 * allocated on first use through __tls_get_addr, with malloc, while the
 * loader may resize the thread's DTV (also with malloc). */
__thread char tls_buf[256 * 1024];
__thread long tls_counter;

long touch(long x) {
  tls_buf[x % (long)sizeof tls_buf] = (char)x;
  tls_counter += x;
  return tls_counter + tls_buf[(x * 7) % (long)sizeof tls_buf];
}
