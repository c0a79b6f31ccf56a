"""Vocabulary for the seed data: names, companies, places and picklist values."""

# fmt: off
FIRST = [
    "Patricia", "James", "Mary", "John", "Linda", "Robert", "Barbara", "Michael", "Elizabeth",
    "William", "Jennifer", "David", "Maria", "Richard", "Susan", "Joseph", "Margaret", "Thomas",
    "Dorothy", "Charles", "Lisa", "Daniel", "Nancy", "Matthew", "Karen", "Anthony", "Betty",
    "Mark", "Helen", "Paul", "Sandra", "Steven", "Donna", "Andrew", "Carol", "Kenneth", "Ruth",
    "Kevin", "Sharon", "Brian", "Michelle", "George", "Laura", "Edward", "Sarah", "Ronald",
    "Kimberly", "Timothy", "Deborah", "Jason", "Jessica", "Jeffrey", "Shirley", "Ryan",
    "Cynthia",
]
LAST = [
    "Boyle", "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
    "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas",
    "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris",
    "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King",
    "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson",
    "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Burns", "Daly",
    "Kowalski",
]
COMPANY_ROOTS = [
    "Zylker", "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne",
    "Wonka", "Tyrell", "Cyberdyne", "Soylent", "Oscorp", "Aperture", "Massive Dynamic",
    "Pied Piper", "Dunder", "Gringotts", "Monarch", "Nakatomi", "Virtucon", "Sterling",
    "Prestige", "Bluth", "Krusty", "Ollivander", "Duff", "Gekko", "Rekall", "Blue Sun",
]
COMPANY_SUFFIX = [
    "Inc", "Ltd", "GmbH", "LLC", "Corp", "Group", "Partners", "AG", "SA", "Co",
]
CITIES = [
    ("Berlin", "Germany"), ("Munich", "Germany"), ("Hamburg", "Germany"), ("Paris", "France"),
    ("Lyon", "France"), ("Madrid", "Spain"), ("Barcelona", "Spain"), ("Rome", "Italy"),
    ("Milan", "Italy"), ("Amsterdam", "Netherlands"), ("Vienna", "Austria"),
    ("Zurich", "Switzerland"), ("Dublin", "Ireland"), ("Lisbon", "Portugal"),
    ("Warsaw", "Poland"), ("Prague", "Czechia"), ("Stockholm", "Sweden"),
    ("Copenhagen", "Denmark"), ("Brussels", "Belgium"), ("London", "United Kingdom"),
    ("Pleasanton", "United States"), ("Austin", "United States"), ("Chennai", "India"),
]
DESIGNATIONS = [
    "CEO", "CTO", "Sales Manager", "Purchasing Manager", "Office Manager", "Engineer",
    "Consultant", "Marketing Lead", "Operations Director", "Analyst", "Buyer", "Founder",
]
LEAD_SOURCES = [
    "Advertisement", "Cold Call", "Employee Referral", "External Referral", "Online Store",
    "Partner", "Trade Show", "Web Download", "Chat",
]
LEAD_STATUSES = [
    "Attempted to Contact", "Contact in Future", "Contacted", "Junk Lead", "Not Contacted",
    "Pre-Qualified", "Not Qualified",
]
INDUSTRIES = [
    "Communications", "Consulting", "Education", "Financial Services", "Healthcare",
    "Manufacturing", "Real Estate", "Retail", "Technology",
]
STAGES = [
    "Qualification", "Needs Analysis", "Value Proposition", "Proposal/Price Quote",
    "Negotiation/Review", "Closed Won", "Closed Lost",
]
DIAGNOSES = [
    "Hypertension", "Type 2 diabetes", "Asthma", "Migraine", "Seasonal allergy",
    "Lower back pain", "Anaemia", "Hypothyroidism", "Sprained ankle",
]
DESCRIPTIONS = [
    "Met at the spring trade show; interested in the enterprise plan.",
    "Asked for a call back after the quarterly budget review.",
    "Prefers e-mail; evaluating three vendors.",
    "Referred by an existing customer, wants a demo.",
    "Downloaded the whitepaper on data retention.", None, None,
]
BASES = [
    "Obtained", "Legitimate Interests", "Contract", "Legal Obligation", "Vital Interests",
    "Public Interests", "Pending", "Awaiting",
]
LAWFUL_REASONS = {
    "Legitimate Interests": "Existing customer relationship",
    "Contract": "Processing necessary for the performance of a contract",
    "Legal Obligation": "Retention required by tax law",
    "Vital Interests": "Protection of the data subject's vital interests",
    "Public Interests": "Task carried out in the public interest",
}
TAGS = [
    "VIP", "Newsletter", "Hot", "Partner-Referral",
]
# fmt: on
