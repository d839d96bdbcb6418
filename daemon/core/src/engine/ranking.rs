//! Which ticket a desk calls next (the queue policy's rank), wait estimates, and the answer
//! for a newly issued ticket.

use super::Engine;
use crate::clock::{MINUTE, Millis};
use crate::domain::{
    CommandError, DeskId, DeskMode, Outcome, ServiceId, Ticket, TicketNumber, TicketOrigin,
    TicketState,
};
use std::cmp::Reverse;

impl Engine {
    /// The ticket `desk` would call at `now`, by the queue policy.
    pub fn best_for(
        &self,
        desk: &DeskId,
        now: Millis,
    ) -> Result<Option<TicketNumber>, CommandError> {
        let desk_def = self.desk(desk)?;
        let policy = &self.catalog.policy;
        let best = self
            .state
            .tickets
            .values()
            .filter(|t| t.state == TicketState::Waiting)
            .filter(|t| desk_def.serves(&t.service))
            .filter(|t| t.not_before.is_none_or(|nb| nb <= now))
            .filter(|t| match &t.preferred_desk {
                None => true,
                Some(p) if p == desk => true,
                Some(_) => t.preferred_until.is_none_or(|until| now >= until),
            })
            .min_by_key(|t| queue_rank(t, desk, now, policy));
        Ok(best.map(|t| t.number.clone()))
    }

    /// Estimated wait for a ticket of `service` issued now: the visitors waiting times the
    /// mean service time, shared among the open desks serving it.
    pub fn estimated_wait(&self, service: &ServiceId) -> Millis {
        self.wait_behind(service, self.waiting_for(service))
    }

    pub(super) fn waiting_for(&self, service: &ServiceId) -> i64 {
        self.state
            .tickets
            .values()
            .filter(|t| t.state == TicketState::Waiting && &t.service == service)
            .count() as i64
    }

    /// The wait behind `ahead` visitors of `service`, from measured service times (the
    /// configured expectation until one is measured) and the open desks serving it.
    pub(super) fn wait_behind(&self, service: &ServiceId, ahead: i64) -> Millis {
        let mean = self
            .state
            .stats
            .get(service)
            .and_then(|s| s.mean_service_ms)
            .or_else(|| self.catalog.services.get(service).map(|s| s.expected))
            .unwrap_or(10 * MINUTE);
        let open_desks = self
            .catalog
            .desks
            .values()
            .filter(|d| d.serves(service))
            .filter(|d| {
                self.state
                    .desks
                    .get(&d.id)
                    .is_some_and(|s| s.mode == DeskMode::Open)
            })
            .count()
            .max(1) as i64;
        ahead.max(0) * mean / open_desks
    }

    pub(super) fn issued_outcome(
        &self,
        issued: &Option<TicketNumber>,
        late_as_walk_in: bool,
    ) -> Outcome {
        let Some(ticket) = issued.as_ref().and_then(|n| self.state.tickets.get(n)) else {
            return Outcome::Unchanged;
        };
        let department = self
            .catalog
            .services
            .get(&ticket.service)
            .map(|s| s.department.clone())
            .unwrap_or_else(|| crate::domain::DepartmentId::new(""));
        // The new ticket itself is waiting too: only those ahead of it count.
        let wait = self.wait_behind(&ticket.service, self.waiting_for(&ticket.service) - 1);
        Outcome::TicketIssued {
            ticket: ticket.number.clone(),
            service: ticket.service.clone(),
            department,
            waiting_area: self.catalog.waiting_area_of(&ticket.service),
            desk: ticket.preferred_desk.clone(),
            late_as_walk_in,
            estimated_wait_minutes: u32::try_from((wait + MINUTE - 1) / MINUTE).unwrap_or(u32::MAX),
        }
    }
}

/// The order in which a desk calls waiting tickets (smallest first): priority; then the
/// desk's own due tickets (booking with this clerk, forward, resume); then walk-ins that waited
/// past the bound; then due appointments by slot; then walk-ins first come first served; then
/// appointments not yet due (an idle desk may take them early); the daily sequence breaks ties.
pub(super) fn queue_rank(
    t: &Ticket,
    desk: &DeskId,
    now: Millis,
    policy: &crate::catalog::Policy,
) -> (Reverse<u8>, bool, u8, Millis, u32) {
    let (due_at, time) = match &t.origin {
        TicketOrigin::Appointment { slot_start, .. } => {
            (slot_start - policy.appointment_due_before, *slot_start)
        }
        TicketOrigin::WalkIn { .. } => (t.queued_at, t.queued_at),
    };
    let due = now >= due_at;
    let own = due && t.preferred_desk.as_ref() == Some(desk);
    let class = match &t.origin {
        TicketOrigin::WalkIn { .. } if now - t.queued_at >= policy.walk_in_max_wait => 0,
        TicketOrigin::Appointment { .. } if due => 1,
        TicketOrigin::WalkIn { .. } => 2,
        TicketOrigin::Appointment { .. } => 3,
    };
    (Reverse(t.priority), !own, class, time, t.sequence)
}
