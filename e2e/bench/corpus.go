package main

import "strings"

// The bodies are built from ordinary English so a tokenizer sees what it
// sees in production (words, punctuation, numbers, a little code), not a
// repeated word that any cache or fast path would flatter.

const systemPrompt = "You are a helpful assistant for Northwind Traders' internal support desk. " +
	"Answer in plain English, cite the policy section you rely on, and keep answers under 200 words. " +
	"If a question involves customer data, remind the user of the data-handling rules in section 4.2."

// userPrompts are the questions the bench's requests ask in turn, each a
// few hundred bytes; with the system prompt and an earlier turn (below) a
// request body is about 1 KB.
var userPrompts = []string{
	"Our warehouse in Lisbon shipped 1,284 orders last week but the dashboard shows 1,197. " +
		"The nightly export job ran at 02:00 UTC as usual and finished without errors. " +
		"Which records could be missing, and how do I reconcile the two numbers before Friday's review?",
	"I need to rotate the API key used by the billing service. The key is stored in the vault under " +
		"secret/billing/openai and read at startup. Can you list the steps so that no request fails " +
		"during the rotation, and tell me how long the old key should stay valid?",
	"Write a short Python function that reads a CSV of invoices (columns: id, customer, amount, due_date), " +
		"skips rows whose amount is not a number, and returns the total overdue amount per customer as a dict. " +
		"Please explain the edge cases you handle.",
	"A customer in Osaka says her order #A-40917 arrived with two items missing. The packing slip lists " +
		"five items, the scale at dispatch recorded 3.2 kg and the carrier recorded 2.4 kg. " +
		"Draft a polite reply and tell me what refund policy applies here.",
	"Summarise the main differences between our standard and express shipping tiers for the new sales " +
		"team: delivery times, weight limits, insurance, and the cut-off hour for same-day dispatch. " +
		"A table would be ideal, followed by two sentences on when to recommend each.",
	"The quarterly report says revenue grew 12.5% while the number of orders fell 3%. " +
		"Is that consistent? Walk me through what could explain it, and which figures I should " +
		"pull from the data warehouse to confirm it before the board meeting.",
	"Translate this notice into Spanish and German, keeping the tone formal: 'The office will be closed " +
		"on Monday for maintenance of the heating system. Remote access remains available; " +
		"urgent requests go to the on-call engineer listed on the intranet.'",
	"Our support queue has 430 open tickets, 61 of them older than seven days. We have six agents " +
		"working eight-hour shifts. Suggest a triage plan for this week and the metrics I should " +
		"watch each morning to know whether it is working.",
}

// answerWords are the completion's words, streamed one or a few per chunk.
var answerWords = strings.Fields("Thank you for the detailed question. The difference most likely comes " +
	"from orders created after the export's cut-off at 02:00 UTC, which the dashboard counts on the " +
	"same day while the export counts them on the next. To reconcile the numbers, first compare the " +
	"order identifiers in both sources for the week, then check the 87 orders whose status changed " +
	"to cancelled or returned, because the dashboard excludes them. Section 3.1 of the reporting " +
	"policy says the export is the figure of record; use it for Friday's review and note the gap " +
	"in one sentence. If the gap is larger than 2%, open a ticket with the data team.")

// earlierAnswer and followUp make a request a conversation's second turn,
// as most chat traffic is.
const (
	earlierAnswer = "Happy to help. Before I answer in detail, could you confirm which team owns this and " +
		"whether the deadline is firm? The right procedure differs between the operations and finance teams (sections 2.3 and 5.1)."
	followUp = "Operations owns it and the deadline is firm. Please go ahead."
)
