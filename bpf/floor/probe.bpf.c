//go:build ignore

/* An empty program: attached at the same sites as a real probe, it measures
 * what the uprobe traps alone cost the target (the benchmark's floor). */
#include "obsd.h"

char __license[] SEC("license") = "Dual MIT/GPL";

SEC("uprobe.multi")
int floor_probe(struct pt_regs *ctx)
{
	return 0;
}
