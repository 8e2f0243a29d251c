// SPDX-License-Identifier: GPL-2.0
/*
 * The host's TSC frequency in kHz, for the guests' tsc_early_khz= (vm.sh,
 * vm2.sh). Under TCG, QEMU gives each vCPU the host's TSC, so this is the
 * rate of the guest's TSC too; the guest's own calibration against the
 * PIT goes wrong when its vCPU loses the host's CPU in the middle of it.
 *
 * Counts TSC ticks over 200 ms of CLOCK_MONOTONIC_RAW. Each end is a TSC
 * read between two clock reads less than 20 us apart, so that a
 * preemption between the reads cannot skew it; the error is at most
 * 40 us in 200 ms (0.02%).
 */
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A TSC read and the clock's time at it, or -1 if no try was quick enough. */
static int sample(uint64_t *tsc, int64_t *ns)
{
	for (int i = 0; i < 1000; i++) {
		int64_t a = now_ns();
		uint64_t t = __rdtsc();
		int64_t b = now_ns();

		if (b - a < 20000) {
			*tsc = t;
			*ns = a + (b - a) / 2;
			return 0;
		}
	}
	return -1;
}

int main(void)
{
	struct timespec pause = { .tv_nsec = 200000000 };
	uint64_t t0, t1;
	int64_t n0, n1;

	if (sample(&t0, &n0) || nanosleep(&pause, NULL) || sample(&t1, &n1) || n1 <= n0) {
		fprintf(stderr, "tsc-khz: no quiet moment to read the clocks in\n");
		return 1;
	}
	printf("%llu\n", (unsigned long long)((t1 - t0) * 1000000 / (uint64_t)(n1 - n0)));
	return 0;
}
