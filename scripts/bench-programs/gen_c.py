# Writes a C file for the compiler benchmark of scripts/bench-preload.sh:
# N functions over N struct types, called from main.
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
lines = ["#include <stdio.h>", "#include <string.h>"]
for i in range(n):
    lines.append(f"""struct s{i} {{ int a[{i % 13 + 1}]; double d; char name[{i % 31 + 1}]; }};
static int f{i}(struct s{i} *p, int n) {{
  int acc = 0;
  for (int k = 0; k < n; k++) {{ acc += p->a[k % {i % 13 + 1}] * {i} + (int)p->d; if (acc > {i * 7}) acc ^= k; }}
  snprintf(p->name, sizeof p->name, "%d", acc);
  return acc + (int)strlen(p->name);
}}""")
lines.append("int main(int argc, char **argv) {\n  int t = 0;\n  (void)argv;")
for i in range(n):
    lines.append(f"  {{ struct s{i} v; memset(&v, argc, sizeof v); t += f{i}(&v, argc + {i % 5}); }}")
lines.append('  printf("%d\\n", t);\n  return 0;\n}')
print("\n".join(lines))
