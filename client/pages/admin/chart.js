// The dashboard's live chart: state changes and interruptions per minute over the
// last hour. The server keeps the counts (GET /api/admin/chart, every worker's), so a
// page opened now shows the hour before it; the feed's events add to them live, and
// the server's counts replace them again every minute. Drawn as plain SVG.

export const MINUTES = 60;
const MINUTE_MS = 60_000;
// A state event with one of these causes is an interruption (docs/protocol.md 2).
export const INTERRUPTION_CAUSES = new Set(['timeout', 'network_error', 'declined', 'provider_error']);

/** Counts per minute; pure, so node tests it. */
export class MinuteCounts {
  constructor(minutes = MINUTES) {
    this.minutes = minutes;
    /** minute number -> {changes, interruptions} */
    this.buckets = new Map();
  }

  /** One durable `state` event at ``ts`` (epoch ms) with ``cause``. */
  add(ts, cause) {
    const minute = Math.floor(ts / MINUTE_MS);
    const bucket = this.buckets.get(minute) ?? { changes: 0, interruptions: 0 };
    bucket.changes += 1;
    if (INTERRUPTION_CAUSES.has(cause)) bucket.interruptions += 1;
    this.buckets.set(minute, bucket);
    if (this.buckets.size > this.minutes * 2) this.#forget(minute);
  }

  /** The server's counts (``[{at, changes, interruptions}]``) replace this page's for
   * the minutes they cover: they include what the feed brought. */
  seed(minutes) {
    for (const m of minutes ?? []) {
      const minute = Math.floor(Number(m.at) / MINUTE_MS);
      if (!Number.isFinite(minute)) continue;
      this.buckets.set(minute, {
        changes: Number(m.changes) || 0,
        interruptions: Number(m.interruptions) || 0,
      });
    }
    const latest = Math.max(...this.buckets.keys());
    if (Number.isFinite(latest)) this.#forget(latest);
  }

  /** The last ``minutes`` minutes up to ``now``, oldest first. */
  series(now) {
    const last = Math.floor(now / MINUTE_MS);
    const changes = [];
    const interruptions = [];
    for (let minute = last - this.minutes + 1; minute <= last; minute += 1) {
      const bucket = this.buckets.get(minute);
      changes.push(bucket?.changes ?? 0);
      interruptions.push(bucket?.interruptions ?? 0);
    }
    return { changes, interruptions };
  }

  #forget(latest) {
    for (const minute of this.buckets.keys()) {
      if (minute <= latest - this.minutes) this.buckets.delete(minute);
    }
  }
}

/** Polyline points for ``values`` in a ``width`` x ``height`` box scaled to ``top``. */
export function points(values, width, height, top) {
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  return values
    .map((v, i) => `${(i * step).toFixed(1)},${(height - (v / top) * height).toFixed(1)}`)
    .join(' ');
}

/** Draw ``series`` into the chart's SVG, its peak into ``peak``, and say it in words
 * in ``describe`` for screen readers. */
export function drawChart(svg, series, describe, peak) {
  const width = 600;
  const height = 100;
  const top = Math.max(1, ...series.changes);
  svg.querySelector('.line-changes').setAttribute('points', points(series.changes, width, height, top));
  svg
    .querySelector('.line-interruptions')
    .setAttribute('points', points(series.interruptions, width, height, top));
  peak.textContent = String(Math.max(0, ...series.changes));
  const now = series.changes.length - 1;
  describe.textContent =
    `In the last minute ${series.changes[now]} state changes and ` +
    `${series.interruptions[now]} interruptions; at most ${top} changes a minute this hour.`;
}
