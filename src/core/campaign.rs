//! Campaign decisions: which presence events lead to a message or points,
//! under opening hours, quiet hours, conditions, cooldowns and caps, and
//! why every other one did not (the audit trail).
//!
//! Pure: [`Engine::decide`] takes the event, the customer, a [`History`]
//! snapshot and the time, and returns [`Decision`]s. Reading and claiming
//! cooldowns and caps is the [`Ledger`]'s job (SQLite in `store`, memory in
//! [`MemoryLedger`] for dry runs).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jiff::civil::Weekday;
use jiff::tz::TimeZone;

use super::identity::{CustomerInfo, CustomerKey};
use super::message::{Message, Variant};
use super::presence::{EventKind, ZoneEvent};
use super::types::{CampaignId, ChannelName, Purpose, Timestamp};
use super::zones::ZoneIdx;

/// A daily time range in the store's local time, minutes since midnight;
/// `start > end` wraps past midnight (`22:00-07:00`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    /// Start, minutes since midnight (inclusive).
    pub start: u16,
    /// End, minutes since midnight (exclusive); 1440 = midnight.
    pub end: u16,
}

impl TimeRange {
    /// Parses `HH:MM-HH:MM` (`24:00` allowed as an end).
    #[must_use]
    pub fn parse(s: &str) -> Option<TimeRange> {
        let (a, b) = s.trim().split_once('-')?;
        let minutes = |t: &str| -> Option<u16> {
            let (h, m) = t.trim().split_once(':')?;
            // Two digits each: `parse` alone would take "+8" or "+0".
            let digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
            if !digits(h) || !digits(m) {
                return None;
            }
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
        };
        let (start, end) = (minutes(a)?, minutes(b)?);
        (start != end && start < 1440).then_some(TimeRange { start, end })
    }

    /// Whether minute-of-day `m` falls in the range.
    #[must_use]
    pub fn contains(&self, m: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&m)
        } else {
            m >= self.start || m < self.end
        }
    }
}

impl fmt::Display for TimeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// A set of weekdays, bit 0 = Monday.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Days(pub u8);

impl Days {
    /// Every day.
    pub const ALL: Days = Days(0x7F);

    /// Whether `d` is in the set.
    #[must_use]
    pub fn contains(self, d: Weekday) -> bool {
        self.0 & (1 << d.to_monday_zero_offset()) != 0
    }

    /// Adds a day.
    #[must_use]
    pub fn with(self, d: Weekday) -> Days {
        Days(self.0 | (1 << d.to_monday_zero_offset()))
    }
}

/// What makes a campaign consider an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Arrived in the store.
    Arrive,
    /// Entered the zone.
    Enter(ZoneIdx),
    /// Dwelled in the zone for its dwell time.
    Dwell(ZoneIdx),
    /// Left the zone.
    Exit(ZoneIdx),
    /// Left the store.
    Leave,
    /// Arrived for the `n`th time (every `n`th time if `repeat`).
    VisitCount {
        /// The visit number.
        n: u32,
        /// Every `n`th visit rather than only the `n`th.
        repeat: bool,
    },
    /// Never by presence: only when staff broadcast it
    /// (`nearcast broadcast`) to every consented customer.
    Broadcast,
}

/// Conditions a campaign's event must meet.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Conditions {
    /// Local times of day (any of); empty = any time the store is open.
    pub hours: Vec<TimeRange>,
    /// Weekdays; `None` = every day.
    pub days: Option<Days>,
    /// Customer must be in at least one of these segments (empty = anyone).
    pub segments: Vec<Arc<str>>,
    /// Customer must be in none of these.
    pub exclude_segments: Vec<Arc<str>>,
    /// Only on the customer's first visit of the (local) day.
    pub first_visit_of_day: bool,
    /// Only if the previous visit was at least this many days ago.
    pub min_days_since_last_visit: Option<u32>,
}

/// Index of a campaign in [`Engine::campaigns`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CampaignIdx(pub u16);

/// Index of a message in [`Engine::messages`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageIdx(pub u16);

/// A campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Campaign {
    /// Id from `campaigns.toml`.
    pub id: CampaignId,
    /// What it reacts to.
    pub trigger: Trigger,
    /// What else must hold.
    pub conditions: Conditions,
    /// Message to send, if any.
    pub message: Option<MessageIdx>,
    /// Loyalty points to award.
    pub points: u32,
    /// Not again for the same customer within this long.
    pub cooldown: Duration,
    /// What the customer must have consented to for its message.
    pub purpose: Purpose,
    /// The delivery-timeout fallback for its message, if any.
    pub fallback: Option<Fallback>,
    /// The follow-up for a read message that no purchase followed.
    pub follow_up: Option<FollowUp>,
    /// Channels this campaign counts as not private enough for personal
    /// data, besides those configured `private = false`.
    pub not_private: Vec<ChannelName>,
}

/// What a message must reach to need no fallback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reached {
    /// The handset has it.
    Delivered,
    /// The customer opened it (chat channels report reads).
    Read,
}

impl Reached {
    /// The name in config and in the database.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Reached::Delivered => "delivered",
            Reached::Read => "read",
        }
    }
}

/// "If the message is not delivered (or read) within `after`, send its
/// plain variant on `channel`" (typically a WhatsApp message backed by SMS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    /// How long to wait after the send.
    pub after: Duration,
    /// What the message must have reached by then.
    pub unless: Reached,
    /// Where the plain variant goes.
    pub channel: Arc<str>,
}

/// "If the message was read and no purchase followed within `after`,
/// send `message`" (an extra-discount reminder), once, under the store's
/// caps and quiet hours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowUp {
    /// The reminder.
    pub message: MessageIdx,
    /// How long after the read.
    pub after: Duration,
}

/// Store-wide rules.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// The store's time zone.
    pub tz: TimeZone,
    /// Opening hours per weekday (index 0 = Monday); empty = closed.
    pub opening: [Vec<TimeRange>; 7],
    /// No messages in these local times.
    pub quiet_hours: Vec<TimeRange>,
    /// Messages per customer per local day, across campaigns.
    pub max_messages_per_day: Option<u32>,
    /// Messages per customer per ISO week (Monday start), across campaigns.
    pub max_messages_per_week: Option<u32>,
    /// Points per customer per local day, across campaigns.
    pub max_points_per_day: Option<u32>,
}

impl Rules {
    /// Open around the clock, no quiet hours, no caps (tests).
    #[must_use]
    pub fn always(tz: TimeZone) -> Rules {
        let all = vec![TimeRange {
            start: 0,
            end: 1440,
        }];
        Rules {
            tz,
            opening: std::array::from_fn(|_| all.clone()),
            quiet_hours: Vec::new(),
            max_messages_per_day: None,
            max_messages_per_week: None,
            max_points_per_day: None,
        }
    }

    /// Local calendar facts about `at`.
    #[must_use]
    pub fn local(&self, at: Timestamp) -> Local {
        let zoned = jiff::Timestamp::from_millisecond(at.0)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned(self.tz.clone());
        let date = zoned.date();
        let weekday = date.weekday();
        let start = |d: jiff::civil::Date| {
            d.to_zoned(self.tz.clone())
                .map_or(at, |z| Timestamp(z.timestamp().as_millisecond()))
        };
        let monday = date
            .checked_sub(jiff::Span::new().days(weekday.to_monday_zero_offset()))
            .unwrap_or(date);
        Local {
            weekday,
            minute: u16::try_from(i32::from(zoned.hour()) * 60 + i32::from(zoned.minute()))
                .unwrap_or(0),
            day_start: start(date),
            week_start: start(monday),
            day_number: i64::from(
                date.since(jiff::civil::date(2000, 1, 1))
                    .map_or(0, |s| s.get_days()),
            ),
        }
    }

    /// The store's caps, the one place they are decided: whether one more
    /// message may be queued (`message`), and how many of `points` may
    /// still be awarded today, given `counts`.
    ///
    /// # Errors
    /// [`Reason::CapDay`] or [`Reason::CapWeek`] when a message would pass
    /// a message cap; [`Reason::PointsCap`] when points were to be awarded
    /// and none are left today.
    pub fn caps(&self, counts: Counts, message: bool, points: u32) -> Result<u32, Reason> {
        if message {
            if self
                .max_messages_per_day
                .is_some_and(|max| counts.messages_today >= max)
            {
                return Err(Reason::CapDay);
            }
            if self
                .max_messages_per_week
                .is_some_and(|max| counts.messages_week >= max)
            {
                return Err(Reason::CapWeek);
            }
        }
        let allowed = match self.max_points_per_day {
            Some(max) => points.min(max.saturating_sub(counts.points_today)),
            None => points,
        };
        if points > 0 && allowed == 0 {
            return Err(Reason::PointsCap);
        }
        Ok(allowed)
    }

    /// Whether `at` falls in the quiet hours (no message goes out then).
    #[must_use]
    pub fn quiet_at(&self, at: Timestamp) -> bool {
        let minute = self.local(at).minute;
        self.quiet_hours.iter().any(|r| r.contains(minute))
    }

    fn open_at(&self, l: &Local) -> bool {
        self.opening[usize::try_from(l.weekday.to_monday_zero_offset()).unwrap_or(0)]
            .iter()
            .any(|r| r.contains(l.minute))
    }
}

/// `Rules::local`'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Local {
    /// Local weekday.
    pub weekday: Weekday,
    /// Local minute of the day.
    pub minute: u16,
    /// Start of the local day.
    pub day_start: Timestamp,
    /// Start of the local ISO week (Monday 00:00).
    pub week_start: Timestamp,
    /// Days since 2000-01-01, local calendar.
    pub day_number: i64,
}

/// What the ledger knows about a customer, before the event being decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Visits recorded (the current one included once it has been recorded).
    pub visits: u32,
    /// Arrival time of the most recent recorded visit.
    pub last_arrival: Option<Timestamp>,
    /// Arrival time of the visit before that.
    pub previous_arrival: Option<Timestamp>,
    /// When each campaign last acted for this customer.
    pub last_fired: Vec<(CampaignId, Timestamp)>,
    /// Messages queued since the start of the local day.
    pub messages_today: u32,
    /// Messages queued since the start of the local week.
    pub messages_week: u32,
    /// Points awarded since the start of the local day.
    pub points_today: u32,
    /// Points balance.
    pub balance: i64,
}

/// What the caps count for one customer at a decision: the facts the
/// ledger hands the engine, before the decision and again inside the
/// transaction that commits it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Messages queued since the start of the local day.
    pub messages_today: u32,
    /// Messages queued since the start of the local week.
    pub messages_week: u32,
    /// Points awarded since the start of the local day.
    pub points_today: u32,
}

impl History {
    /// What the caps count.
    #[must_use]
    pub fn counts(&self) -> Counts {
        Counts {
            messages_today: self.messages_today,
            messages_week: self.messages_week,
            points_today: self.points_today,
        }
    }

    fn last_fired(&self, id: &CampaignId) -> Option<Timestamp> {
        self.last_fired
            .iter()
            .find(|(c, _)| c == id)
            .map(|(_, t)| *t)
    }
}

/// Why a campaign did not act.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The customer opted out (or was erased) since the snapshot.
    OptedOut,
    /// The store is closed.
    Closed,
    /// Quiet hours.
    QuietHours,
    /// Outside the campaign's hours.
    OutsideHours,
    /// Not one of the campaign's days.
    WrongDay,
    /// Customer not in the campaign's segments.
    Segment,
    /// Not the first visit today.
    NotFirstVisit,
    /// The previous visit was too recent (or there was none).
    DaysSinceVisit,
    /// None of the customer's channels is configured here.
    NoChannel,
    /// No configured channel carries the customer's consent for this purpose.
    NoConsent,
    /// The campaign acted for this customer within its cooldown.
    Cooldown,
    /// Daily message cap reached.
    CapDay,
    /// Weekly message cap reached.
    CapWeek,
    /// Daily points cap reached.
    PointsCap,
    /// The wall clock is not trustworthy yet.
    ClockUnsynced,
}

impl Reason {
    /// Every reason, for metrics and summaries.
    pub const ALL: [Reason; 15] = [
        Reason::OptedOut,
        Reason::Closed,
        Reason::QuietHours,
        Reason::OutsideHours,
        Reason::WrongDay,
        Reason::Segment,
        Reason::NotFirstVisit,
        Reason::DaysSinceVisit,
        Reason::NoChannel,
        Reason::NoConsent,
        Reason::Cooldown,
        Reason::CapDay,
        Reason::CapWeek,
        Reason::PointsCap,
        Reason::ClockUnsynced,
    ];

    /// The reason's name in output and the database.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Reason::OptedOut => "opted_out",
            Reason::Closed => "closed",
            Reason::QuietHours => "quiet_hours",
            Reason::OutsideHours => "outside_hours",
            Reason::WrongDay => "wrong_day",
            Reason::Segment => "segment",
            Reason::NotFirstVisit => "not_first_visit",
            Reason::DaysSinceVisit => "days_since_visit",
            Reason::NoChannel => "no_channel",
            Reason::NoConsent => "no_consent",
            Reason::Cooldown => "cooldown",
            Reason::CapDay => "cap_day",
            Reason::CapWeek => "cap_week",
            Reason::PointsCap => "points_cap",
            Reason::ClockUnsynced => "clock_unsynced",
        }
    }

    /// What the reason means, for staff reading a summary.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            Reason::OptedOut => "the customer opted out",
            Reason::Closed => "the store was closed",
            Reason::QuietHours => "quiet hours",
            Reason::OutsideHours => "outside the campaign's hours",
            Reason::WrongDay => "not one of the campaign's days",
            Reason::Segment => "not in the campaign's segments",
            Reason::NotFirstVisit => "not the first visit today",
            Reason::DaysSinceVisit => "the last visit was too recent, or there was none",
            Reason::NoChannel => "none of the customer's channels is configured",
            Reason::NoConsent => "no consent for this purpose on a configured channel",
            Reason::Cooldown => "already acted for this customer within the cooldown",
            Reason::CapDay => "the customer's daily message limit was reached",
            Reason::CapWeek => "the customer's weekly message limit was reached",
            Reason::PointsCap => "the daily points limit was reached",
            Reason::ClockUnsynced => "the clock was not synchronised",
        }
    }

    /// Parses a name written by [`Reason::name`].
    #[must_use]
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.name() == s)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A campaign acting: what to queue and award.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    /// Message to queue.
    pub message: Option<MessageIdx>,
    /// The channel it goes to first, and the variant that channel gets.
    pub channel: Option<(ChannelName, Variant)>,
    /// Points to award (after the daily cap).
    pub points: u32,
    /// The message expires at this time.
    pub expires_at: Timestamp,
}

/// A follow-up the engine decided to queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowUpAction {
    /// The reminder.
    pub message: MessageIdx,
    /// The variant the parent's channel gets.
    pub variant: Variant,
    /// Not to be sent after this.
    pub expires_at: Timestamp,
}

/// A campaign's answer to an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It acts.
    Act(Action),
    /// It does not, and why.
    Suppressed(Reason),
}

/// One campaign's decision about one event for one customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// When.
    pub at: Timestamp,
    /// Which campaign.
    pub campaign: CampaignIdx,
    /// Its id.
    pub campaign_id: CampaignId,
    /// The outcome.
    pub outcome: Outcome,
}

/// A configured delivery channel, as the decision sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelSpec {
    /// Name customers' preferences use.
    pub name: ChannelName,
    /// The richest variant it carries.
    pub variant: Variant,
    /// Whether personal data (name, balance) may go over it; `false` for a
    /// shared inbox or a channel whose provider keeps message texts.
    pub private: bool,
}

/// The campaign book and the store's rules.
#[derive(Clone, Debug, PartialEq)]
pub struct Engine {
    /// Campaigns, in priority order.
    pub campaigns: Vec<Campaign>,
    /// Messages.
    pub messages: Vec<Message>,
    /// Store-wide rules.
    pub rules: Rules,
    /// Configured channels.
    pub channels: Vec<ChannelSpec>,
}

impl Engine {
    /// The message at `idx`.
    #[must_use]
    pub fn message(&self, idx: MessageIdx) -> &Message {
        &self.messages[usize::from(idx.0)]
    }

    /// The campaign at `idx`.
    #[must_use]
    pub fn campaign(&self, idx: CampaignIdx) -> &Campaign {
        &self.campaigns[usize::from(idx.0)]
    }

    /// Whether any campaign could react to this kind of event (so the shell
    /// can skip fetching history for events nobody listens to).
    #[must_use]
    pub fn listens(&self, kind: &EventKind) -> bool {
        self.campaigns.iter().any(|c| match c.trigger {
            Trigger::VisitCount { .. } => *kind == EventKind::Arrived,
            ref t => matches(t, kind, 0),
        })
    }

    /// Decisions for an event that cannot be decided (the clock is not
    /// trustworthy): every campaign its trigger alone would wake, suppressed
    /// with `reason`. Visit-count campaigns need the history and are left out.
    #[must_use]
    pub fn suppress_all(&self, event: &ZoneEvent, reason: Reason) -> Vec<Decision> {
        self.campaigns
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                !matches!(c.trigger, Trigger::VisitCount { .. })
                    && matches(&c.trigger, &event.kind, 0)
            })
            .map(|(i, c)| Decision {
                at: event.at,
                campaign: CampaignIdx(u16::try_from(i).unwrap_or(u16::MAX)),
                campaign_id: c.id.clone(),
                outcome: Outcome::Suppressed(reason),
            })
            .collect()
    }

    /// Decides every campaign triggered by `event` for `customer`, in
    /// priority order; each acting campaign counts against the caps of the
    /// next ones.
    #[must_use]
    pub fn decide(
        &self,
        event: &ZoneEvent,
        customer: &CustomerInfo,
        history: &History,
    ) -> Vec<Decision> {
        let now = event.at;
        let local = self.rules.local(now);
        // The visit this event belongs to and the one before it.
        let (visit_number, previous) = if event.kind == EventKind::Arrived {
            (history.visits + 1, history.last_arrival)
        } else {
            (history.visits.max(1), history.previous_arrival)
        };
        let mut h = history.clone();
        let mut out = Vec::new();
        for (i, c) in self.campaigns.iter().enumerate() {
            if !matches(&c.trigger, &event.kind, visit_number) {
                continue;
            }
            let campaign = CampaignIdx(u16::try_from(i).unwrap_or(u16::MAX));
            let outcome = match self.check(c, customer, &h, &local, now, previous) {
                Err(reason) => Outcome::Suppressed(reason),
                Ok(action) => {
                    if action.message.is_some() {
                        h.messages_today += 1;
                        h.messages_week += 1;
                    }
                    h.points_today += action.points;
                    h.balance += i64::from(action.points);
                    h.last_fired.push((c.id.clone(), now));
                    Outcome::Act(action)
                }
            };
            out.push(Decision {
                at: now,
                campaign,
                campaign_id: c.id.clone(),
                outcome,
            });
        }
        out
    }

    fn check(
        &self,
        c: &Campaign,
        customer: &CustomerInfo,
        h: &History,
        local: &Local,
        now: Timestamp,
        previous: Option<Timestamp>,
    ) -> Result<Action, Reason> {
        let rules = &self.rules;
        let cond = &c.conditions;
        if !rules.open_at(local) {
            return Err(Reason::Closed);
        }
        if c.message.is_some() && rules.quiet_hours.iter().any(|r| r.contains(local.minute)) {
            return Err(Reason::QuietHours);
        }
        if !cond.hours.is_empty() && !cond.hours.iter().any(|r| r.contains(local.minute)) {
            return Err(Reason::OutsideHours);
        }
        if cond.days.is_some_and(|d| !d.contains(local.weekday)) {
            return Err(Reason::WrongDay);
        }
        let in_segment = |s: &Arc<str>| customer.segments.contains(s);
        if (!cond.segments.is_empty() && !cond.segments.iter().any(in_segment))
            || cond.exclude_segments.iter().any(in_segment)
        {
            return Err(Reason::Segment);
        }
        let previous_day = previous.map(|p| rules.local(p).day_number);
        if cond.first_visit_of_day && previous_day == Some(local.day_number) {
            return Err(Reason::NotFirstVisit);
        }
        // A win-back needs a last visit: a first-ever visit does not qualify.
        if let Some(min) = cond.min_days_since_last_visit
            && previous_day.is_none_or(|day| local.day_number - day < i64::from(min))
        {
            return Err(Reason::DaysSinceVisit);
        }
        let channel = match c.message {
            None => None,
            Some(m) => Some(self.channel_for(customer, self.message(m), c.purpose)?),
        };
        if let Some(last) = h.last_fired(&c.id)
            && now < last.saturating_add(c.cooldown)
        {
            return Err(Reason::Cooldown);
        }
        let points = rules.caps(h.counts(), c.message.is_some(), c.points)?;
        let ttl = c.message.map_or(Duration::ZERO, |m| self.message(m).ttl);
        Ok(Action {
            message: c.message,
            channel,
            points,
            expires_at: now.saturating_add(ttl),
        })
    }

    /// Decides a broadcast of campaign `idx` to `customer` at `now`: the
    /// same checks as a presence event (opening and quiet hours, the
    /// campaign's hours, days and segments, consent for its purpose,
    /// cooldown, caps, points), with "the last visit" for
    /// `min_days_since_last_visit` being the customer's most recent one.
    #[must_use]
    pub fn decide_broadcast(
        &self,
        idx: CampaignIdx,
        customer: &CustomerInfo,
        history: &History,
        now: Timestamp,
    ) -> Decision {
        let c = self.campaign(idx);
        let local = self.rules.local(now);
        let outcome = match self.check(c, customer, history, &local, now, history.last_arrival) {
            Ok(action) => Outcome::Act(action),
            Err(reason) => Outcome::Suppressed(reason),
        };
        Decision {
            at: now,
            campaign: idx,
            campaign_id: c.id.clone(),
            outcome,
        }
    }

    /// The window of read times whose messages are due follow-up `f` at
    /// `now`: read between a day and nothing before `f.after` ago (a read
    /// older than that, while the box was off, is not followed up: a
    /// reminder days late is noise). `None` during quiet hours, which hold
    /// follow-ups like any message.
    #[must_use]
    pub fn follow_up_window(
        &self,
        f: &FollowUp,
        now: Timestamp,
    ) -> Option<std::ops::Range<Timestamp>> {
        if self.rules.quiet_at(now) {
            return None;
        }
        let until = now.saturating_sub(f.after);
        Some(Engine::follow_up_reads_since(f, now)..until)
    }

    /// The oldest read that follow-up `f` may still come after at `now` or
    /// later (the start of [`Engine::follow_up_window`]'s window).
    #[must_use]
    pub fn follow_up_reads_since(f: &FollowUp, now: Timestamp) -> Timestamp {
        now.saturating_sub(f.after)
            .saturating_sub(Duration::from_secs(24 * 3600))
    }

    /// Decides follow-up `f` of a message that went out on `channel`:
    /// `f.message` in the richest variant that channel carries, unless the
    /// customer's caps (`counts`, as the ledger has them now) are reached.
    ///
    /// # Errors
    /// [`Reason::CapDay`] or [`Reason::CapWeek`].
    pub fn decide_follow_up(
        &self,
        f: &FollowUp,
        channel: &str,
        counts: Counts,
        now: Timestamp,
    ) -> Result<FollowUpAction, Reason> {
        self.rules.caps(counts, true, 0)?;
        let message = self.message(f.message);
        let variant = self
            .channels
            .iter()
            .find(|c| c.name.as_str() == channel)
            .map_or(Variant::Plain, |c| message.best_for(c.variant));
        Ok(FollowUpAction {
            message: f.message,
            variant,
            expires_at: now.saturating_add(message.ttl),
        })
    }

    /// The campaign with this id.
    #[must_use]
    pub fn find_campaign(&self, id: &str) -> Option<CampaignIdx> {
        self.campaigns
            .iter()
            .position(|c| c.id.as_str() == id)
            .and_then(|i| u16::try_from(i).ok())
            .map(CampaignIdx)
    }

    /// Whether campaign `campaign` may send personal data over `channel`:
    /// the channel is private and the campaign does not list it as not
    /// private enough. Unknown names are not private.
    #[must_use]
    pub fn private_enough(&self, campaign: &str, channel: &str) -> bool {
        let channel_private = self
            .channels
            .iter()
            .any(|c| c.name.as_str() == channel && c.private);
        let campaign_objects = self
            .campaigns
            .iter()
            .find(|c| c.id.as_str() == campaign)
            .is_none_or(|c| c.not_private.iter().any(|n| n.as_str() == channel));
        channel_private && !campaign_objects
    }

    /// The send-time guard: refuses, with why, a message whose variant for
    /// this channel carries personal data when the channel is not private
    /// enough for the campaign. `check-config` refuses such a configuration
    /// already; this holds if a configuration slips past it.
    ///
    /// # Errors
    /// What would leak and where, for the outbox row's error.
    pub fn privacy_guard(
        &self,
        campaign: &str,
        channel: &str,
        message: &Message,
        variant: Variant,
    ) -> Result<(), String> {
        if self.private_enough(campaign, channel) {
            return Ok(());
        }
        let personal = message.personal_data(variant);
        if personal.is_empty() {
            return Ok(());
        }
        Err(format!(
            "message {} would carry {} over channel {channel}, which is not private enough for campaign {campaign}",
            message.id,
            personal
                .iter()
                .map(|p| format!("{{{p}}}"))
                .collect::<Vec<_>>()
                .join(" and ")
        ))
    }

    /// The customer's first channel, in their order of preference, that is
    /// configured and consented for `purpose`, with the richest variant of
    /// `message` it can carry.
    ///
    /// # Errors
    /// [`Reason::NoChannel`] when none of the customer's channels is
    /// configured, [`Reason::NoConsent`] when none of the configured ones
    /// carries consent for `purpose`.
    pub fn channel_for(
        &self,
        customer: &CustomerInfo,
        message: &Message,
        purpose: Purpose,
    ) -> Result<(ChannelName, Variant), Reason> {
        let mut configured = false;
        for (name, purposes) in &customer.channels {
            let Some(spec) = self.channels.iter().find(|c| &c.name == name) else {
                continue;
            };
            configured = true;
            if purposes.contains(purpose) {
                return Ok((spec.name.clone(), message.best_for(spec.variant)));
            }
        }
        Err(if configured {
            Reason::NoConsent
        } else {
            Reason::NoChannel
        })
    }
}

fn matches(trigger: &Trigger, kind: &EventKind, visit_number: u32) -> bool {
    match (trigger, kind) {
        (Trigger::Arrive, EventKind::Arrived) | (Trigger::Leave, EventKind::Left) => true,
        (Trigger::Enter(z), EventKind::Entered(e)) | (Trigger::Exit(z), EventKind::Exited(e)) => {
            z == e
        }
        (Trigger::Dwell(z), EventKind::Dwelled(e, _)) => z == e,
        (Trigger::VisitCount { n, repeat }, EventKind::Arrived) => {
            *n > 0 && (visit_number == *n || (*repeat && visit_number % *n == 0))
        }
        _ => false,
    }
}

/// The decision-side view of the database: history snapshots in, decisions
/// out. Implementations commit each event's decisions atomically.
pub trait Ledger {
    /// The implementation's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// What is known about `customer` at `local` (day and week bounds).
    ///
    /// # Errors
    /// Storage failures.
    fn history(&mut self, customer: &CustomerInfo, local: &Local) -> Result<History, Self::Error>;

    /// Records `event` (in `zone`; a visit on `arrived`/`left`) and its decisions in
    /// one transaction. An `Act` whose cooldown or cap was taken meanwhile
    /// (another decider, a retry) comes back as `Suppressed`; a customer who
    /// opted out meanwhile gets `Suppressed(OptedOut)`. Returns the final
    /// decisions and, for each queued message, its outbox id.
    ///
    /// # Errors
    /// Storage failures; then nothing was written.
    fn commit(
        &mut self,
        event: &ZoneEvent,
        zone: &str,
        customer: &CustomerInfo,
        local: &Local,
        engine: &Engine,
        decisions: Vec<Decision>,
    ) -> Result<Vec<Committed>, Self::Error>;
}

/// A decision after commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The decision as it stands.
    pub decision: Decision,
    /// The outbox row, if a message was queued.
    pub outbox_id: Option<i64>,
    /// Balance after the decision.
    pub balance: i64,
}

/// An in-memory ledger: `replay --dry-run`, benchmarks and tests.
#[derive(Default, Debug)]
pub struct MemoryLedger {
    customers: HashMap<CustomerKey, MemoryHistory>,
    next_outbox: i64,
}

#[derive(Default, Debug)]
struct MemoryHistory {
    arrivals: Vec<Timestamp>,
    fired: Vec<(CampaignId, Timestamp)>,
    messages: Vec<Timestamp>,
    points: Vec<(Timestamp, u32)>,
    balance: i64,
}

impl MemoryLedger {
    /// An empty ledger.
    #[must_use]
    pub fn new() -> MemoryLedger {
        MemoryLedger::default()
    }
}

impl Ledger for MemoryLedger {
    type Error = std::convert::Infallible;

    fn history(&mut self, customer: &CustomerInfo, local: &Local) -> Result<History, Self::Error> {
        let Some(m) = self.customers.get(&customer.key) else {
            return Ok(History::default());
        };
        let n = m.arrivals.len();
        let since = |from: Timestamp| m.messages.iter().filter(|t| **t >= from).count();
        Ok(History {
            visits: u32::try_from(n).unwrap_or(u32::MAX),
            last_arrival: m.arrivals.last().copied(),
            previous_arrival: n.checked_sub(2).map(|i| m.arrivals[i]),
            last_fired: m.fired.clone(),
            messages_today: u32::try_from(since(local.day_start)).unwrap_or(u32::MAX),
            messages_week: u32::try_from(since(local.week_start)).unwrap_or(u32::MAX),
            points_today: m
                .points
                .iter()
                .filter(|(t, _)| *t >= local.day_start)
                .map(|(_, p)| p)
                .sum(),
            balance: m.balance,
        })
    }

    fn commit(
        &mut self,
        event: &ZoneEvent,
        _zone: &str,
        customer: &CustomerInfo,
        local: &Local,
        _engine: &Engine,
        decisions: Vec<Decision>,
    ) -> Result<Vec<Committed>, Self::Error> {
        let m = self.customers.entry(customer.key).or_default();
        if event.kind == EventKind::Arrived {
            m.arrivals.push(event.at);
        }
        // Keep memory flat over a long dry run: only what the rules can see.
        let horizon = local.week_start.min(local.day_start);
        m.messages.retain(|t| *t >= horizon);
        m.points.retain(|(t, _)| *t >= horizon);
        if m.arrivals.len() > 2 {
            m.arrivals.drain(..m.arrivals.len() - 2);
        }
        let mut out = Vec::with_capacity(decisions.len());
        for d in decisions {
            let mut outbox_id = None;
            if let Outcome::Act(a) = &d.outcome {
                match m.fired.iter_mut().find(|(c, _)| *c == d.campaign_id) {
                    Some(f) => f.1 = d.at,
                    None => m.fired.push((d.campaign_id.clone(), d.at)),
                }
                if a.message.is_some() {
                    m.messages.push(d.at);
                    self.next_outbox += 1;
                    outbox_id = Some(self.next_outbox);
                }
                if a.points > 0 {
                    m.points.push((d.at, a.points));
                    m.balance += i64::from(a.points);
                }
            }
            out.push(Committed {
                decision: d,
                outbox_id,
                balance: m.balance,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::message::Message;
    use crate::core::types::Purposes;

    fn tz() -> TimeZone {
        TimeZone::get("Europe/Berlin").unwrap()
    }

    /// Local Berlin time on Friday 2026-11-20.
    fn at(hm: &str) -> Timestamp {
        let z = jiff::civil::date(2026, 11, 20)
            .at(hm[..2].parse().unwrap(), hm[3..].parse().unwrap(), 0, 0)
            .to_zoned(tz())
            .unwrap();
        Timestamp(z.timestamp().as_millisecond())
    }

    fn customer(segments: &[&str], channels: &[&str]) -> CustomerInfo {
        CustomerInfo {
            key: CustomerKey(1),
            id: "c1".into(),
            segments: segments.iter().map(|s| Arc::from(*s)).collect(),
            channels: channels
                .iter()
                .map(|c| (ChannelName::from(*c), Purposes::ALL))
                .collect(),
        }
    }

    /// A campaign sending message 0 for `purpose`, no points, an hour's
    /// cooldown, no conditions, fallback or follow-up.
    fn campaign(id: &str, trigger: Trigger, purpose: Purpose) -> Campaign {
        Campaign {
            id: id.into(),
            trigger,
            conditions: Conditions::default(),
            message: Some(MessageIdx(0)),
            points: 0,
            cooldown: Duration::from_secs(3600),
            purpose,
            fallback: None,
            follow_up: None,
            not_private: Vec::new(),
        }
    }

    fn engine() -> Engine {
        let mut rules = Rules::always(tz());
        rules.opening = std::array::from_fn(|i| {
            if i == 6 {
                vec![]
            } else {
                vec![TimeRange::parse("09:00-20:00").unwrap()]
            }
        });
        rules.quiet_hours = vec![TimeRange::parse("19:30-09:00").unwrap()];
        rules.max_messages_per_day = Some(2);
        rules.max_points_per_day = Some(50);
        Engine {
            campaigns: vec![
                Campaign {
                    points: 10,
                    cooldown: Duration::from_secs(24 * 3600),
                    ..campaign("welcome", Trigger::Arrive, Purpose::Welcome)
                },
                Campaign {
                    conditions: Conditions {
                        segments: vec!["gold".into()],
                        ..Conditions::default()
                    },
                    ..campaign("coffee", Trigger::Enter(ZoneIdx(1)), Purpose::Offers)
                },
                Campaign {
                    message: None,
                    points: 45,
                    cooldown: Duration::ZERO,
                    ..campaign(
                        "fifth",
                        Trigger::VisitCount { n: 5, repeat: true },
                        Purpose::Loyalty,
                    )
                },
            ],
            messages: vec![Message {
                id: "hello".into(),
                ttl: Duration::from_secs(300),
                plain: "Hi".into(),
                max_segments: 1,
                medium: None,
                rich: None,
            }],
            rules,
            channels: vec![
                ChannelSpec {
                    name: "whatsapp".into(),
                    variant: Variant::Rich,
                    private: true,
                },
                ChannelSpec {
                    name: "sms".into(),
                    variant: Variant::Plain,
                    private: true,
                },
            ],
        }
    }

    #[test]
    fn the_caps_are_decided_in_one_place() {
        let mut rules = Rules::always(tz());
        rules.max_messages_per_day = Some(2);
        rules.max_messages_per_week = Some(5);
        rules.max_points_per_day = Some(50);
        let c = |messages_today, messages_week, points_today| Counts {
            messages_today,
            messages_week,
            points_today,
        };
        assert_eq!(rules.caps(c(1, 1, 0), true, 10), Ok(10));
        assert_eq!(rules.caps(c(2, 2, 0), true, 10), Err(Reason::CapDay));
        assert_eq!(rules.caps(c(2, 2, 0), false, 10), Ok(10));
        assert_eq!(rules.caps(c(1, 5, 0), true, 0), Err(Reason::CapWeek));
        assert_eq!(rules.caps(c(0, 0, 45), false, 10), Ok(5));
        assert_eq!(rules.caps(c(0, 0, 50), false, 10), Err(Reason::PointsCap));
        assert_eq!(rules.caps(c(0, 0, 50), true, 0), Ok(0));
    }

    #[test]
    fn a_follow_up_is_decided_by_the_engine_under_the_caps_and_quiet_hours() {
        let e = engine();
        let f = FollowUp {
            message: MessageIdx(0),
            after: Duration::from_secs(24 * 3600),
        };
        let now = at("10:00");
        let window = e.follow_up_window(&f, now).unwrap();
        assert_eq!(
            (window.start, window.end),
            (
                now.saturating_sub(Duration::from_secs(48 * 3600)),
                now.saturating_sub(Duration::from_secs(24 * 3600))
            )
        );
        assert_eq!(e.follow_up_window(&f, at("20:00")), None);
        assert_eq!(
            e.decide_follow_up(&f, "sms", Counts::default(), now),
            Ok(FollowUpAction {
                message: MessageIdx(0),
                variant: Variant::Plain,
                expires_at: now.saturating_add(Duration::from_secs(300)),
            })
        );
        let capped = Counts {
            messages_today: 2,
            ..Counts::default()
        };
        assert_eq!(
            e.decide_follow_up(&f, "sms", capped, now),
            Err(Reason::CapDay)
        );
    }

    fn ev(t: Timestamp, kind: EventKind) -> ZoneEvent {
        ZoneEvent {
            at: t,
            customer: CustomerKey(1),
            kind,
        }
    }

    fn outcomes(d: &[Decision]) -> Vec<(String, String)> {
        d.iter()
            .map(|d| {
                let o = match &d.outcome {
                    Outcome::Act(a) => {
                        format!("act {}", a.channel.as_ref().map_or("-", |c| c.0.as_str()))
                    }
                    Outcome::Suppressed(r) => r.name().to_owned(),
                };
                (d.campaign_id.to_string(), o)
            })
            .collect()
    }

    #[test]
    fn welcome_goes_to_the_first_configured_channel() {
        let e = engine();
        let d = e.decide(
            &ev(at("10:00"), EventKind::Arrived),
            &customer(&[], &["viber", "sms"]),
            &History::default(),
        );
        assert_eq!(outcomes(&d), [("welcome".into(), "act sms".into())]);
        let Outcome::Act(a) = &d[0].outcome else {
            panic!()
        };
        assert_eq!(a.points, 10);
        assert_eq!(a.expires_at, at("10:05"));
    }

    #[test]
    fn every_suppression_has_its_reason() {
        let e = engine();
        let c = customer(&[], &["sms"]);
        let arrive = |t| e.decide(&ev(t, EventKind::Arrived), &c, &History::default());
        assert_eq!(outcomes(&arrive(at("08:00")))[0].1, "closed");
        assert_eq!(outcomes(&arrive(at("19:45")))[0].1, "quiet_hours");
        let none = e.decide(
            &ev(at("10:00"), EventKind::Arrived),
            &customer(&[], &["viber"]),
            &History::default(),
        );
        assert_eq!(outcomes(&none)[0].1, "no_channel");
        let at_ten = |h: &History| {
            outcomes(&e.decide(&ev(at("10:00"), EventKind::Arrived), &c, h))[0]
                .1
                .clone()
        };
        let recent = History {
            last_fired: vec![("welcome".into(), at("09:30"))],
            ..History::default()
        };
        assert_eq!(at_ten(&recent), "cooldown");
        let capped = History {
            messages_today: 2,
            ..History::default()
        };
        assert_eq!(at_ten(&capped), "cap_day");
        let points = History {
            points_today: 50,
            ..History::default()
        };
        assert_eq!(at_ten(&points), "points_cap");
        let not_gold = e.decide(
            &ev(at("10:00"), EventKind::Entered(ZoneIdx(1))),
            &c,
            &History::default(),
        );
        assert_eq!(outcomes(&not_gold), [("coffee".into(), "segment".into())]);
        // A Sunday: closed.
        let sunday = Timestamp(at("10:00").0 + 2 * 86_400_000);
        assert_eq!(outcomes(&arrive(sunday))[0].1, "closed");
    }

    #[test]
    fn offers_need_consent_for_offers_on_that_channel() {
        let e = engine();
        let mut c = customer(&["gold"], &["whatsapp", "sms"]);
        // WhatsApp consented for welcome only; SMS for everything.
        c.channels[0].1 = Purposes::default().with(Purpose::Welcome);
        let welcome = e.decide(
            &ev(at("10:00"), EventKind::Arrived),
            &c,
            &History::default(),
        );
        assert_eq!(
            outcomes(&welcome)[0],
            ("welcome".into(), "act whatsapp".into())
        );
        let offer = e.decide(
            &ev(at("10:00"), EventKind::Entered(ZoneIdx(1))),
            &c,
            &History::default(),
        );
        assert_eq!(outcomes(&offer), [("coffee".into(), "act sms".into())]);
        // No channel with offers consent at all.
        c.channels[1].1 = Purposes::default().with(Purpose::Welcome);
        let offer = e.decide(
            &ev(at("10:00"), EventKind::Entered(ZoneIdx(1))),
            &c,
            &History::default(),
        );
        assert_eq!(outcomes(&offer), [("coffee".into(), "no_consent".into())]);
    }

    #[test]
    fn caps_count_earlier_campaigns_of_the_same_event() {
        let e = engine();
        let c = customer(&["gold"], &["sms"]);
        // Fifth visit: welcome (10 points) then the 45-point bonus, clipped to 40 by the daily cap.
        let h = History {
            visits: 4,
            ..History::default()
        };
        let d = e.decide(&ev(at("10:00"), EventKind::Arrived), &c, &h);
        assert_eq!(
            outcomes(&d),
            [
                ("welcome".into(), "act sms".into()),
                ("fifth".into(), "act -".into())
            ]
        );
        let Outcome::Act(a) = &d[1].outcome else {
            panic!()
        };
        assert_eq!(a.points, 40);
        // One message already today: welcome takes the second, the gold coffee offer hits the cap.
        let h = History {
            messages_today: 1,
            ..History::default()
        };
        let d = e.decide(&ev(at("10:00"), EventKind::Arrived), &c, &h);
        assert_eq!(outcomes(&d), [("welcome".into(), "act sms".into())]);
        let h = History {
            messages_today: 2,
            visits: 1,
            ..History::default()
        };
        let d = e.decide(&ev(at("10:00"), EventKind::Entered(ZoneIdx(1))), &c, &h);
        assert_eq!(outcomes(&d), [("coffee".into(), "cap_day".into())]);
    }

    #[test]
    fn first_visit_of_day_and_days_since_last_visit() {
        let mut e = engine();
        e.campaigns[0].conditions.first_visit_of_day = true;
        e.campaigns[0].conditions.min_days_since_last_visit = Some(30);
        let c = customer(&[], &["sms"]);
        let h = |last: Timestamp| History {
            visits: 1,
            last_arrival: Some(last),
            ..History::default()
        };
        let arrive = |h: &History| {
            outcomes(&e.decide(&ev(at("15:00"), EventKind::Arrived), &c, h))[0]
                .1
                .clone()
        };
        assert_eq!(arrive(&h(at("09:30"))), "not_first_visit");
        assert_eq!(
            arrive(&h(Timestamp(at("15:00").0 - 29 * 86_400_000))),
            "days_since_visit"
        );
        assert_eq!(
            arrive(&h(Timestamp(at("15:00").0 - 30 * 86_400_000))),
            "act sms"
        );
        assert_eq!(arrive(&History::default()), "days_since_visit");
        let mut e = e.clone();
        e.campaigns[0].conditions.min_days_since_last_visit = None;
        let d = e.decide(
            &ev(at("15:00"), EventKind::Arrived),
            &c,
            &History::default(),
        );
        assert_eq!(outcomes(&d)[0].1, "act sms");
    }

    #[test]
    fn a_broadcast_is_decided_by_the_same_checks_and_never_by_presence() {
        let mut e = engine();
        e.campaigns.push(Campaign {
            conditions: Conditions {
                min_days_since_last_visit: Some(30),
                ..Conditions::default()
            },
            ..campaign("flash", Trigger::Broadcast, Purpose::Offers)
        });
        let idx = e.find_campaign("flash").unwrap();
        let c = customer(&[], &["whatsapp", "sms"]);
        let long_ago = History {
            last_arrival: Some(Timestamp(at("10:00").0 - 40 * 86_400_000)),
            ..History::default()
        };
        let outcome =
            |h: &History, t: Timestamp| outcomes(&[e.decide_broadcast(idx, &c, h, t)])[0].1.clone();
        assert_eq!(outcome(&long_ago, at("10:00")), "act whatsapp");
        assert_eq!(outcome(&long_ago, at("19:45")), "quiet_hours");
        assert_eq!(
            outcome(&History::default(), at("10:00")),
            "days_since_visit"
        );
        let fired = History {
            last_fired: vec![("flash".into(), at("09:30"))],
            ..long_ago.clone()
        };
        assert_eq!(outcome(&fired, at("10:00")), "cooldown");
        // No presence event wakes it.
        let d = e.decide(&ev(at("10:00"), EventKind::Arrived), &c, &long_ago);
        assert!(d.iter().all(|d| d.campaign_id.as_str() != "flash"));
    }

    #[test]
    fn local_calendar_in_the_store_time_zone() {
        let r = Rules::always(tz());
        let l = r.local(at("00:30"));
        assert_eq!((l.weekday, l.minute), (Weekday::Friday, 30));
        assert_eq!(l.day_start, at("00:00"));
        assert_eq!(l.week_start.0, at("00:00").0 - 4 * 86_400_000);
        // 23:30 UTC on Thursday is already Friday in Berlin.
        assert_eq!(
            r.local(Timestamp(at("00:30").0)).day_number,
            r.local(at("23:59")).day_number
        );
    }

    #[test]
    fn time_ranges_parse_and_wrap() {
        let r = TimeRange::parse("22:00-07:00").unwrap();
        assert!(r.contains(23 * 60) && r.contains(60) && !r.contains(12 * 60));
        assert_eq!(
            TimeRange::parse("09:00-24:00"),
            Some(TimeRange {
                start: 540,
                end: 1440
            })
        );
        for bad in [
            "9:00-10:00",
            "09:00",
            "25:00-26:00",
            "09:60-10:00",
            "10:00-10:00",
            "+8:00-20:00",
            "08:+0-20:00",
        ] {
            assert_eq!(TimeRange::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn memory_ledger_remembers_cooldowns_and_points() {
        let e = engine();
        let c = customer(&[], &["sms"]);
        let mut l = MemoryLedger::new();
        let local = e.rules.local(at("10:00"));
        let event = ev(at("10:00"), EventKind::Arrived);
        let h = l.history(&c, &local).unwrap();
        let d = e.decide(&event, &c, &h);
        let done = l.commit(&event, "store", &c, &local, &e, d).unwrap();
        assert_eq!(done[0].outbox_id, Some(1));
        assert_eq!(done[0].balance, 10);
        let event = ev(at("12:00"), EventKind::Arrived);
        let h = l.history(&c, &e.rules.local(event.at)).unwrap();
        assert_eq!((h.visits, h.messages_today, h.points_today), (1, 1, 10));
        assert_eq!(outcomes(&e.decide(&event, &c, &h))[0].1, "cooldown");
    }
}
